"""Session dwell/energy quantile forecaster: contract, learning, no peeking, input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from ampflow.engine.errors import AmpflowError
from ampflow.forecasting import (
    ForecastError,
    SessionForecaster,
    SessionPredictor,
    driver_inputs,
    fit_before,
    session_columns,
    sessions_known_at,
    user_history,
)
from ampflow.scenarios.acn import acn_path, read_acn
from tests.forecasting.synthetic import synthetic_sessions

PLUGIN = ["session_id", "station_id", "arrival", "estimated_departure", "requested_kwh", "claimed"]


def _mae(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


def _dwell(df: pd.DataFrame) -> pd.Series:
    return (df.departure - df.arrival).dt.total_seconds() / 3600


@pytest.fixture(scope="module")
def split(sessions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return sessions.iloc[:450].copy(), sessions.iloc[450:].copy()


@pytest.fixture(scope="module")
def fitted(split: tuple[pd.DataFrame, pd.DataFrame]) -> SessionForecaster:
    return SessionForecaster(max_iter=60, min_samples_leaf=10).fit(split[0])


def test_follows_the_estimator_contract(fitted: SessionForecaster) -> None:
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params()
    assert not hasattr(twin, "dwell_models_")
    with pytest.raises(NotFittedError):
        twin.predict_sessions(pd.DataFrame({"arrival": [], "station_id": []}))
    assert isinstance(fitted, SessionPredictor)
    assert fitted.quantiles_ == (0.1, 0.5, 0.9)
    assert len(fitted.dwell_models_) == len(fitted.energy_models_) == 3


def test_fit_is_deterministic_under_a_fixed_random_state(
    split: tuple[pd.DataFrame, pd.DataFrame], fitted: SessionForecaster
) -> None:
    again = clone(fitted).fit(split[0])
    test = split[1][PLUGIN]
    pd.testing.assert_frame_equal(again.predict_sessions(test), fitted.predict_sessions(test))


def test_predictions_are_ordered_and_physical(
    split: tuple[pd.DataFrame, pd.DataFrame], fitted: SessionForecaster
) -> None:
    test = split[1][PLUGIN].copy()
    # Out-of-distribution rows too: midnight arrivals, an unknown station, absurd estimates.
    odd = test.head(20).copy()
    odd["station_id"] = "never-seen"
    odd["arrival"] = odd.arrival.dt.floor("D")
    odd["estimated_departure"] = odd.arrival - pd.Timedelta("30h")
    odd.index = odd.index + 10_000
    pred = fitted.predict_sessions(pd.concat([test, odd]))
    assert list(pred.columns) == session_columns((0.1, 0.5, 0.9))
    for name in ("dwell_h", "departure", "energy_kwh"):
        assert (pred[f"{name}_q10"] <= pred[f"{name}_q50"]).all()
        assert (pred[f"{name}_q50"] <= pred[f"{name}_q90"]).all()
    assert (pred.dwell_h_q10 >= 0).all()
    assert (pred.energy_kwh_q10 >= 0).all()
    arrival = pd.concat([test, odd]).arrival
    assert (pred.departure_q10 >= arrival).all()
    assert str(pred.departure_q50.dt.tz) == "UTC"


def test_learns_from_driver_history_and_beats_the_drivers() -> None:
    train = synthetic_sessions(900, seed=1)
    test = synthetic_sessions(400, seed=2)
    test["arrival"] += pd.Timedelta("70D")
    test["departure"] += pd.Timedelta("70D")
    test["estimated_departure"] += pd.Timedelta("70D")
    truth = _dwell(test)
    with_users = SessionForecaster(max_iter=80).fit(train).predict_sessions(test)
    no_users = (
        SessionForecaster(max_iter=80)
        .fit(train.drop(columns="user_id"))
        .predict_sessions(test.drop(columns="user_id"))
    )
    claimed = test.claimed.to_numpy()
    est_h, _ = driver_inputs(test)
    driver_mae = _mae(est_h[claimed], truth[claimed])
    model_mae = _mae(with_users.dwell_h_q50[claimed], truth[claimed])
    # Dwell is 2 + user % 8 h plus noise of 0.3 h; driver estimates are off by 2 h.
    assert model_mae < 0.6
    assert model_mae < 0.5 * driver_mae
    assert model_mae < 0.5 * _mae(no_users.dwell_h_q50[claimed], truth[claimed])
    # Energy depends on the station: 5, 15 or 30 kWh +-20 %.
    assert _mae(with_users.energy_kwh_q50, test.energy_kwh) < 2.5
    inside = (truth >= with_users.dwell_h_q10) & (truth <= with_users.dwell_h_q90)
    assert 0.6 < inside.mean() <= 1.0


def test_user_history_counts_only_sessions_that_ended_before_arrival() -> None:
    t = pd.Timestamp("2024-01-01 08:00", tz="UTC")
    pool = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b"],
            "arrival": [t - pd.Timedelta(h, "h") for h in (50, 30, 3)] + [t - pd.Timedelta("9h")],
            "departure": [t - pd.Timedelta(h, "h") for h in (46, 24, -2)]
            + [t - pd.Timedelta("1h")],
            "dwell_h": [4.0, 6.0, 5.0, 8.0],
            "energy_kwh": [10.0, 20.0, 99.0, 7.0],
        }
    )
    query = pd.DataFrame({"user_id": ["a", "b", "c", None], "arrival": [t] * 4}, index=[7, 8, 9, 3])
    hist = user_history(pool, query)
    rows = hist.to_numpy()
    assert rows[0].tolist() == [2.0, 5.0, 15.0]  # the third session of 'a' is still on
    assert rows[1].tolist() == [1.0, 8.0, 7.0]
    assert rows[2, 0] == 0.0
    assert np.isnan(rows[2, 1:]).all()
    assert np.isnan(rows[3]).all()
    assert hist.index.tolist() == [7, 8, 9, 3]


def test_unclaimed_sessions_hide_their_inputs() -> None:
    # In the ACN files an unclaimed session's "estimate" is its true departure.
    df = synthetic_sessions(50, seed=3)
    est, req = driver_inputs(df)
    claimed = df.claimed.to_numpy()
    assert np.isnan(est[~claimed]).all()
    assert np.isnan(req[~claimed]).all()
    assert np.isfinite(est[claimed]).all()
    assert np.isfinite(req[claimed]).all()
    no_flag = driver_inputs(df.drop(columns="claimed"))
    assert np.isfinite(no_flag[0]).all()


def test_a_session_own_outcome_and_unclaimed_inputs_are_never_used(
    split: tuple[pd.DataFrame, pd.DataFrame], fitted: SessionForecaster
) -> None:
    # Without user ids in the frame, no other session's outcome is read either (with them, the
    # sessions that ended before an arrival rightly join the driver's history).
    test = split[1].drop(columns="user_id")
    base = fitted.predict_sessions(test)
    noisy = test.copy()
    noisy["departure"] += pd.Timedelta("17h")
    noisy["energy_kwh"] *= 5
    unclaimed = ~noisy.claimed
    noisy.loc[unclaimed, "estimated_departure"] += pd.Timedelta("9h")
    noisy.loc[unclaimed, "requested_kwh"] += 40
    pd.testing.assert_frame_equal(fitted.predict_sessions(noisy), base)
    claimed_changed = test.copy()
    claimed_changed.loc[~unclaimed, "estimated_departure"] += pd.Timedelta("9h")
    assert not fitted.predict_sessions(claimed_changed).equals(base)


def _perturb_after(df: pd.DataFrame, t: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """Change every value that becomes known only after ``t``."""
    out = df.copy()
    later = out.arrival > t
    n_later = int(later.sum())
    out.loc[later, "arrival"] += pd.to_timedelta(rng.uniform(0, 5, n_later), unit="h")
    out.loc[later, "station_id"] = rng.choice(["S1", "S2", "S3"], n_later)
    out.loc[later, "user_id"] = rng.choice(["u1", "u2"], n_later)
    out.loc[later, "claimed"] = rng.random(n_later) < 0.5
    out.loc[later, "requested_kwh"] = rng.uniform(1, 80, n_later)
    out.loc[later, "estimated_departure"] = out.loc[later, "arrival"] + pd.Timedelta("1h")
    pending = (out.departure > t).to_numpy()
    start = out.arrival.where(out.arrival > t, t)
    moved = start + pd.Timedelta("1min") + pd.to_timedelta(rng.uniform(0, 30, len(out)), unit="h")
    out["departure"] = out.departure.where(~pending, moved)
    n_pending = int(pending.sum())
    out.loc[pending, "energy_kwh"] = rng.uniform(0, 80, n_pending)
    return out


def test_fit_before_and_predict_at_never_see_the_future() -> None:
    df = synthetic_sessions(700, seed=4)
    cutoff = pd.Timestamp("2024-04-10 12:00", tz="UTC")
    t = cutoff + pd.Timedelta("4D 23h")
    rng = np.random.default_rng(0)
    model = fit_before(SessionForecaster(max_iter=40), df, cutoff)
    perturbed = _perturb_after(df, cutoff, rng)
    twin = fit_before(SessionForecaster(max_iter=40), perturbed, cutoff)
    assert model.n_sessions_ == twin.n_sessions_ == int((df.departure < cutoff).sum())
    pred = model.predict_at(df, t)
    assert len(pred) > 0
    pd.testing.assert_frame_equal(twin.predict_at(perturbed, t), model.predict_at(perturbed, t))
    for seed in range(3):
        later = _perturb_after(df, t, np.random.default_rng(seed))
        pd.testing.assert_frame_equal(model.predict_at(later, t), pred)
    # The check can fail: a change to a past session of a present driver shows.
    present_users = set(df.loc[pred.index, "user_id"])
    past = df.index[(df.departure < t - pd.Timedelta("1D")) & df.user_id.isin(present_users)]
    changed = df.copy()
    changed.loc[past, "departure"] += pd.Timedelta("20h")
    assert not model.predict_at(changed, t).equals(pred)


def test_predict_at_returns_present_sessions_with_elapsed_dwell() -> None:
    df = synthetic_sessions(300, seed=5)
    model = SessionForecaster(max_iter=30).fit(df)
    t = df.arrival.iloc[150] + pd.Timedelta("2h")
    pred = model.predict_at(df, t)
    present = df.index[(df.arrival <= t) & (df.departure > t)]
    assert sorted(pred.index) == sorted(present)
    elapsed = (t - df.loc[pred.index, "arrival"]).dt.total_seconds() / 3600
    assert (pred.dwell_h_q10 >= elapsed - 1e-9).all()
    assert (pred.departure_q10 >= t - pd.Timedelta("1us")).all()
    plugin_only = model.predict_at(df.drop(columns=["departure", "energy_kwh"]), t)
    assert set(pred.index) <= set(plugin_only.index)


def test_sessions_known_at_masks_outcomes() -> None:
    df = synthetic_sessions(100, seed=6)
    t = df.arrival.iloc[50]
    known = sessions_known_at(df, t)
    assert (known.arrival <= t).all()
    assert len(known) == int((df.arrival <= t).sum())
    pending = df.loc[known.index, "departure"] > t
    assert known.loc[pending, "departure"].isna().all()
    assert known.loc[pending, "energy_kwh"].isna().all()
    assert (known.loc[~pending, "energy_kwh"] == df.loc[known.index[~pending], "energy_kwh"]).all()
    strict = sessions_known_at(df, t, strict=True)
    assert len(strict) == len(known) - 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns="station_id"), r"missing column\(s\) \['station_id'\]"),
        (
            lambda d: d.assign(arrival=d.arrival.dt.tz_localize(None)),
            "'arrival' must hold tz-aware",
        ),
        (
            lambda d: d.assign(departure=d.arrival - pd.Timedelta("1h")),
            "'departure' must not precede 'arrival'",
        ),
        (lambda d: d.assign(energy_kwh=-d.energy_kwh), "'energy_kwh' must be >= 0, got -"),
        (lambda d: d.assign(energy_kwh="lots"), "'energy_kwh' must be numeric"),
        (lambda d: d.assign(requested_kwh=np.inf), "'requested_kwh' holds an infinite value"),
        (
            lambda d: d.assign(claimed=["maybe"] * len(d)),
            "'claimed' must be True or False, got 'maybe' at session_id 's",
        ),
        (
            lambda d: d.assign(departure=pd.Series(pd.NaT, index=d.index, dtype="M8[ns, UTC]")),
            "no completed session",
        ),
    ],
)
def test_bad_sessions_are_named(mutate: object, message: str) -> None:
    df = synthetic_sessions(40, seed=7)
    with pytest.raises(ForecastError, match=message) as info:
        SessionForecaster(max_iter=5).fit(mutate(df))  # type: ignore[operator]
    assert isinstance(info.value, AmpflowError)


@pytest.mark.parametrize(
    ("quantiles", "message"),
    [((), "at least one"), ((0.5, 1.0), r"in \(0, 1\), got 1.0"), ((0.5, 0.5), "distinct")],
)
def test_bad_quantiles_are_named(quantiles: tuple[float, ...], message: str) -> None:
    with pytest.raises(ForecastError, match=message):
        SessionForecaster(quantiles=quantiles).fit(synthetic_sessions(40))


def test_predict_on_no_session_gives_an_empty_frame(fitted: SessionForecaster) -> None:
    empty = synthetic_sessions(5).iloc[:0]
    pred = fitted.predict_sessions(empty)
    assert pred.empty
    assert list(pred.columns) == session_columns(fitted.quantiles_)


def test_no_peeking_in_a_replay_of_real_caltech_sessions() -> None:
    df = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    start = pd.Timestamp("2019-10-14 00:00", tz="America/Los_Angeles")
    model = fit_before(SessionForecaster(timezone="America/Los_Angeles", max_iter=30), df, start)
    assert model.n_sessions_ == int((df.departure < start).sum())
    rng = np.random.default_rng(1)
    for hours in (9, 13, 33):
        t = start + pd.Timedelta(hours=hours)
        pred = model.predict_at(df, t)
        assert len(pred) > 5
        future = df.copy()
        later = future.arrival > t
        future.loc[later, "station_id"] = rng.choice(future.station_id.unique(), int(later.sum()))
        future.loc[later, "requested_kwh"] = 99.0
        pending = (future.departure > t).to_numpy()
        future["departure"] = future.departure.where(
            ~pending, future.departure + pd.Timedelta("5h")
        )
        future.loc[pending, "energy_kwh"] = 0.0
        pd.testing.assert_frame_equal(model.predict_at(future, t), pred)
