"""Synthetic session data with a known structure, shared by the forecasting tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-03-04 00:00", tz="UTC")  # a Monday


def synthetic_sessions(n: int = 600, *, seed: int = 0, users: int = 30) -> pd.DataFrame:
    """Sessions whose dwell depends on the user (2 + user % 8 h) and energy on the station.

    Drivers claim 80 % of sessions; their estimates are the truth plus noise of 2 h. Unclaimed
    sessions carry the truth as estimate, as in the ACN files.
    """
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 60, n)
    hours = rng.normal(9.0, 2.0, n).clip(0, 23)
    arrival = START + pd.to_timedelta(days * 24 + hours, unit="h")
    user = rng.integers(0, users, n)
    station = rng.choice(["S1", "S2", "S3"], n)
    dwell_h = 2.0 + (user % 8) + rng.normal(0, 0.3, n).clip(-1, 1)
    energy = np.select([station == "S1", station == "S2"], [5.0, 15.0], 30.0)
    energy = energy * rng.uniform(0.8, 1.2, n)
    departure = arrival + pd.to_timedelta(dwell_h, unit="h")
    claimed = rng.random(n) < 0.8
    estimate = np.where(claimed, dwell_h + rng.normal(0, 2, n), dwell_h)
    df = pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(n)],
            "station_id": station,
            "arrival": arrival,
            "departure": departure,
            "estimated_departure": arrival + pd.to_timedelta(np.maximum(estimate, 0.2), unit="h"),
            "energy_kwh": energy,
            "requested_kwh": np.where(claimed, energy * 2, energy),
            "claimed": claimed,
            "user_id": [f"u{u}" for u in user],
        }
    )
    return df.sort_values("arrival", kind="stable").reset_index(drop=True)
