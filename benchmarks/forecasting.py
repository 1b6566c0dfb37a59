"""Session forecasts on real ACN data: the model against the drivers' own estimates.

Caltech: train on 2019-05..08, test on 2019-09..12 (two bundled files). JPL: only one file
(2019-05..08) exists, so it is split by time at 2019-07-01 00:00 local: training sessions are those
that departed before the cut-off, test sessions those that arrived after it; sessions plugged in
across the cut-off are in neither.

Baselines, measured in the same run on the same test sessions: the driver's own departure estimate
and requested energy (where the driver gave them, i.e. claimed the session), and a naive model that
predicts the training sessions' median dwell and energy for everyone. Departure errors are in hours,
energy errors in kWh. Target: departure MAE at least 20 % below the driver's own estimate.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from ampflow.forecasting import ACN_TIMEZONE, evaluate, sessions_completed_before
from ampflow.scenarios.acn import acn_path, read_acn
from benchmarks._common import emit, parser, peak_rss_mb

TARGET_IMPROVEMENT = 0.2
QUANTILES = (0.1, 0.5, 0.9)
JPL_CUTOFF = pd.Timestamp("2019-07-01 00:00", tz=ACN_TIMEZONE)


def _row(train_df: pd.DataFrame, test_df: pd.DataFrame, **about: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    scores = evaluate(train_df, test_df, quantiles=QUANTILES, random_state=0)
    elapsed = time.perf_counter() - t0
    improvement = scores["departure_improvement"]
    return {
        **about,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()},
        "target_met": improvement is not None and improvement >= TARGET_IMPROVEMENT,
        "fit_and_score_s": round(elapsed, 2),
    }


def caltech() -> dict[str, Any]:
    """Train on Caltech 2019-05..08, test on 2019-09..12."""
    train_name, test_name = "caltech_2019-05-01_2019-08-31", "caltech_2019-09-01_2019-12-31"
    return _row(
        read_acn(acn_path(train_name)),
        read_acn(acn_path(test_name)),
        train=train_name,
        test=test_name,
    )


def jpl() -> dict[str, Any]:
    """JPL's single file, split by time at :data:`JPL_CUTOFF`."""
    name = "jpl_2019-05-01_2019-08-31"
    df = read_acn(acn_path(name))
    train = sessions_completed_before(df, JPL_CUTOFF)
    test = df.loc[df.arrival >= JPL_CUTOFF]
    return _row(
        train,
        test,
        train=name,
        test=name,
        split=(
            f"only one JPL file exists, so it is split by time at {JPL_CUTOFF.isoformat()}: "
            "train = sessions that departed before, test = sessions that arrived after; "
            f"{len(df) - len(train) - len(test)} sessions plugged in across the cut-off are in "
            "neither"
        ),
    )


def main() -> None:
    args = parser(__doc__.splitlines()[0] if __doc__ else "forecasting").parse_args()
    result: dict[str, Any] = {
        "benchmark": "forecasting",
        "units": {"departure": "h", "energy": "kWh"},
        "quantiles": list(QUANTILES),
        "target_departure_improvement": TARGET_IMPROVEMENT,
        "baselines": (
            "driver: the driver's own departure estimate / requested energy, on sessions where the "
            "driver gave them (claimed); median: the training sessions' median dwell and energy"
        ),
        "caltech": caltech(),
        "jpl": jpl(),
    }
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit(result, as_json=args.json)


if __name__ == "__main__":
    main()
