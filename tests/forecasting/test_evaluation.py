"""Scores: pinball loss, MAE, and evaluate() on synthetic and on the bundled ACN data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import mean_pinball_loss

from ampflow.forecasting import ForecastError, evaluate, mean_absolute_error, pinball_loss
from ampflow.scenarios.acn import acn_path, read_acn
from tests.forecasting.synthetic import synthetic_sessions

finite = st.floats(-1e3, 1e3, allow_nan=False)


@given(
    st.lists(st.tuples(finite, finite), min_size=1, max_size=30),
    st.floats(0.01, 0.99),
)
def test_pinball_loss_matches_scikit_learn(pairs: list[tuple[float, float]], q: float) -> None:
    y, p = (np.array(v) for v in zip(*pairs, strict=True))
    assert pinball_loss(y, p, q) == pytest.approx(mean_pinball_loss(y, p, alpha=q), abs=1e-9)
    assert pinball_loss(y, p, 0.5) == pytest.approx(0.5 * float(np.mean(np.abs(y - p))))


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ForecastError, match="shape"):
        pinball_loss([1.0, 2.0], [1.0], 0.5)
    with pytest.raises(ForecastError, match=r"quantile must be in \(0, 1\), got 1.5"):
        pinball_loss([1.0], [1.0], 1.5)
    assert mean_absolute_error([], []) is None


def test_evaluate_scores_the_driver_estimate_exactly() -> None:
    train = synthetic_sessions(500, seed=10)
    test = synthetic_sessions(200, seed=11)
    # Every claimed driver leaves exactly 90 minutes after their estimate.
    test["estimated_departure"] = test.departure - pd.Timedelta("90min")
    test.loc[~test.claimed, "estimated_departure"] = test.departure
    scores = evaluate(train.drop(columns="user_id"), test.drop(columns="user_id"))
    claimed = int(test.claimed.sum())
    assert scores["n_train"] == 500
    assert scores["n_test"] == 200
    assert scores["n_test_with_estimate"] == scores["n_test_with_request"] == claimed
    assert scores["departure_mae_h_driver"] == pytest.approx(1.5)
    requested = test.requested_kwh[test.claimed] - test.energy_kwh[test.claimed]
    assert scores["energy_mae_kwh_driver"] == pytest.approx(float(requested.abs().mean()))
    dwell = (test.departure - test.arrival).dt.total_seconds() / 3600
    median = (train.departure - train.arrival).dt.total_seconds().median() / 3600
    assert scores["departure_mae_h_median_all"] == pytest.approx(
        float((dwell - median).abs().mean())
    )
    model = scores["departure_mae_h_model"]
    assert isinstance(model, float)
    assert scores["departure_improvement"] == pytest.approx(1 - model / 1.5)
    for lab in ("q10", "q50", "q90"):
        assert isinstance(scores[f"pinball_dwell_h_{lab}"], float)
        assert isinstance(scores[f"pinball_energy_kwh_{lab}"], float)
    assert 0.0 <= float(scores["coverage_dwell"] or 0) <= 1.0


def test_evaluate_without_driver_inputs_reports_none() -> None:
    train = synthetic_sessions(300, seed=12).drop(columns=["estimated_departure", "requested_kwh"])
    test = synthetic_sessions(100, seed=13).drop(columns=["estimated_departure", "requested_kwh"])
    scores = evaluate(train, test, quantiles=(0.25, 0.75))
    assert scores["n_test_with_estimate"] == 0
    assert scores["departure_mae_h_driver"] is None
    assert scores["departure_improvement"] is None
    assert set(k for k in scores if k.startswith("pinball_dwell")) == {
        "pinball_dwell_h_q25",
        "pinball_dwell_h_q75",
    }


def test_evaluate_names_the_bad_frame() -> None:
    train = synthetic_sessions(100, seed=14)
    with pytest.raises(ForecastError, match="test sessions: column 'departure' must not precede"):
        evaluate(train, train.assign(departure=train.arrival - pd.Timedelta("1h")))
    with pytest.raises(ForecastError, match="no session to score"):
        evaluate(train, train.iloc[:0])


@pytest.mark.slow
def test_caltech_model_beats_the_drivers_by_a_fifth() -> None:
    train = read_acn(acn_path("caltech_2019-05-01_2019-08-31"))
    test = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    scores = evaluate(train, test)
    assert scores["n_test"] == 3177
    assert scores["n_test_with_estimate"] == int(test.claimed.sum())
    assert float(scores["departure_improvement"] or 0) >= 0.2
    assert float(scores["departure_mae_h_model"] or 99) < float(
        scores["departure_mae_h_median"] or 0
    )
    assert float(scores["energy_mae_kwh_model"] or 99) < float(scores["energy_mae_kwh_median"] or 0)
