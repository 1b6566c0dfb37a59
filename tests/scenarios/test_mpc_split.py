"""``mpc(split="urgency")``: the plan's site total shared by laxity, not by the plan's split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ampflow.engine.errors import AmpflowError
from ampflow.scenarios.format import load_scenario
from ampflow.scenarios.policies import make_policy
from ampflow.scenarios.simulator import simulate
from tests.scenarios.conftest import write_scenario


def _two_evs(tmp_path: Path) -> Path:
    """Two 11 kW EVs plugged in together on cp-1's two connectors, a flat price, and a DR cap
    of 8 kW for the first two hours (below two minimum currents). ``soon`` leaves at 02:00,
    ``later`` at 05:00; each wants 12 kWh."""
    rows = [
        {
            "session_id": sid,
            "charger_id": "cp-1",
            "connector": k + 1,
            "arrival": "2026-03-02T00:00:00+01:00",
            "departure": departure,
            "energy_kwh": 12.0,
            "max_kw": 11.0,
        }
        for k, (sid, departure) in enumerate(
            [("soon", "2026-03-02T02:00:00+01:00"), ("later", "2026-03-02T05:00:00+01:00")]
        )
    ]
    times = pd.date_range(pd.Timestamp("2026-03-02T00:00:00+01:00"), periods=6, freq="h")
    prices = pd.DataFrame({"time": [t.isoformat() for t in times], "import_per_kwh": 0.2})
    events = pd.DataFrame(
        {
            "site_id": ["depot"],
            "start": ["2026-03-02T00:00:00+01:00"],
            "end": ["2026-03-02T02:00:00+01:00"],
            "cap_kw": [8.0],
        }
    )
    return write_scenario(
        tmp_path / "two",
        sessions=pd.DataFrame(rows),
        prices=prices,
        tables={"events": events},
    )


def test_urgency_gives_the_plans_total_to_the_ev_leaving_first(tmp_path: Path) -> None:
    """The cap lets one EV charge at a time. Both plans are optimal for the LP (flat price),
    but by urgency ``soon`` takes the 8 kW until it has its 12 kWh, 30 minutes before it
    leaves, and only then does ``later`` start."""
    sc = load_scenario(_two_evs(tmp_path))
    ds = simulate(sc, make_policy("mpc", split="urgency"))
    assert float(ds.attrs["over_limit_kwh"]) == 0.0
    power = ds.power_kw.sel(session=["soon", "later"]).transpose("session", "time").to_numpy()
    dt_h = sc.dt_s / 3600
    done = np.cumsum(power[0]) * dt_h >= 12.0 - 1e-6
    first_done = int(np.argmax(done))
    assert done.any()
    assert first_done * dt_h <= 1.5  # by 01:30
    assert power[1, : first_done + 1].max() == pytest.approx(0.0, abs=1e-9)
    assert ds.energy_delivered_kwh.sel(session="later").item() == pytest.approx(12.0, abs=0.05)


def test_split_must_be_known() -> None:
    with pytest.raises(AmpflowError, match="split"):
        make_policy("mpc", split="random")
