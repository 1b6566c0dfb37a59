"""``mpc``: dwell quantiles read given the stay so far; the demand charge amortized for V2G."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ampflow.engine.errors import AmpflowError
from ampflow.scenarios import bundled_scenario, load_scenario
from ampflow.scenarios.planning import MPC, dwell_given
from ampflow.scenarios.policies import make_policy
from ampflow.scenarios.results import metrics
from ampflow.scenarios.simulator import Observation, simulate
from tests.scenarios.conftest import START, write_scenario

LEVELS = np.array([0.1, 0.5, 0.9])

grids = st.lists(st.floats(0.05, 12.0, allow_nan=False), min_size=3, max_size=3).map(
    lambda v: np.array([sorted(v)])
)


def test_at_plug_in_the_quantiles_are_the_forecast() -> None:
    grid = np.array([[1.0, 2.0, 4.0], [0.5, 0.5, 3.0]])
    for k, q in enumerate(LEVELS):
        np.testing.assert_allclose(dwell_given(grid, LEVELS, 0.0, q), grid[:, k])


def test_an_ev_that_stayed_past_its_median_gets_a_later_one() -> None:
    grid = np.array([[1.0, 2.0, 4.0]])
    # Stayed 2 h = its median: half of such drivers have left; the median of the rest is the
    # unconditional 75 % quantile: 5/8 of the way from 2 h (50 %) to 4 h (90 %).
    assert dwell_given(grid, LEVELS, 2.0, 0.5)[0] == pytest.approx(3.25)
    # Past every quantile, the exponential tail: the same residual however long it stayed.
    a = dwell_given(grid, LEVELS, 6.0, 0.5)[0] - 6.0
    b = dwell_given(grid, LEVELS, 9.0, 0.5)[0] - 9.0
    assert a == pytest.approx(b)
    assert a > 0


@given(grids, st.floats(0.0, 20.0), st.floats(0.01, 0.99), st.floats(0.01, 0.99))
def test_conditional_quantiles_are_monotone_and_never_in_the_past(
    grid: np.ndarray, stayed: float, q1: float, q2: float
) -> None:
    lo, hi = sorted((q1, q2))
    d_lo = dwell_given(grid, LEVELS, stayed, lo)[0]
    d_hi = dwell_given(grid, LEVELS, stayed, hi)[0]
    assert stayed <= d_lo <= d_hi + 1e-9
    # Staying longer never brings the expected departure forward.
    assert dwell_given(grid, LEVELS, stayed + 0.5, lo)[0] >= d_lo - 1e-9


def test_a_single_quantile_is_taken_as_it_is() -> None:
    grid = np.array([[1.5]])
    assert dwell_given(grid, np.array([0.25]), 3.0, 0.25).tolist() == [1.5]
    with pytest.raises(AmpflowError, match="dwell_h_q50"):
        dwell_given(grid, np.array([0.25]), 0.0, 0.5)


class _Quantiles:
    """Forecasts a 1 / 2 / 4 h dwell (10 / 50 / 90 %) for every session."""

    def predict_sessions(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {"dwell_h_q10": 1.0, "dwell_h_q50": 2.0, "dwell_h_q90": 4.0}, index=X.index
        )


class _Recording(MPC):
    """``mpc`` that records, at each re-plan, every plugged session's planned and early
    departure, forecast or learned."""

    def forecast(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        return self._record(obs, *super().forecast(obs))

    def _learned(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        return self._record(obs, *super()._learned(obs))

    def _record(
        self, obs: Observation, late: np.ndarray, early: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        pairs = zip(obs.session.tolist(), late.tolist(), early.tolist(), strict=True)
        self.seen.append((obs.t, {s: (a, b) for s, a, b in pairs}))
        return late, early

    def reset(self, context: object) -> None:
        super().reset(context)  # type: ignore[arg-type]
        self.seen: list[tuple[int, dict[int, tuple[int, int]]]] = []


def _one_long_stay(tmp_path: Path) -> Path:
    at = pd.Timestamp(START)
    sessions = pd.DataFrame(
        [
            {
                "session_id": "s0",
                "charger_id": "cp-1",
                "arrival": at.isoformat(),
                "departure": (at + pd.Timedelta(hours=5)).isoformat(),
                "energy_kwh": 30.0,
                "max_kw": 7.4,
            }
        ]
    )
    return write_scenario(tmp_path / "long", sessions=sessions)


@pytest.mark.parametrize("conditional", [True, False])
def test_mpc_plans_a_long_stay_on_the_quantiles_given_it_is_still_there(
    tmp_path: Path, conditional: bool
) -> None:
    sc = load_scenario(_one_long_stay(tmp_path))
    policy = _Recording(forecaster=_Quantiles(), conditional=conditional)
    simulate(sc, policy)
    steps_per_h = 3600 // sc.dt_s
    at_3h = [plans[0][0] for t, plans in policy.seen if t == 3 * steps_per_h]
    assert at_3h, "a re-plan at 3 h"
    if conditional:
        # 3 h in, the median of the drivers who stay that long, later than 3 h.
        expected = dwell_given(np.array([[1.0, 2.0, 4.0]]), LEVELS, 3.0, 0.5)[0]
        assert at_3h[0] == int(np.floor(expected * steps_per_h))
        assert at_3h[0] > 3 * steps_per_h + 1
    else:
        assert at_3h[0] == 2 * steps_per_h  # the plug-in median, already past


class _WithFivePercent:
    """Forecasts a 0.5 / 1 / 2 / 4 h dwell (5 / 10 / 50 / 90 %), labelled as
    :class:`~ampflow.forecasting.SessionForecaster` labels them (``q5`` sorts after ``q10``
    as text)."""

    def predict_sessions(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {"dwell_h_q10": 1.0, "dwell_h_q5": 0.5, "dwell_h_q50": 2.0, "dwell_h_q90": 4.0},
            index=X.index,
        )


def test_mpc_reads_a_five_percent_quantile_in_its_place(tmp_path: Path) -> None:
    """With ``early_quantile=0.05`` the soft early target at plug-in is the forecast's 5 %
    dwell (30 min). Read in the columns' text order, the levels were 10, 5, 50, 90 % against
    sorted values, and the early target came out elsewhere."""
    sc = load_scenario(_one_long_stay(tmp_path))
    policy = _Recording(
        forecaster=_WithFivePercent(), early_quantile=0.05, early_penalty_per_kwh=2.0
    )
    simulate(sc, policy)
    t0, plans = policy.seen[0]
    assert t0 == 0
    steps_per_h = 3600 // sc.dt_s
    assert plans[0] == (2 * steps_per_h, steps_per_h // 2)  # median 2 h, 5 % at 30 min
    assert policy.grid_q.tolist() == [0.05, 0.1, 0.5, 0.9]


def test_mpc_amortizes_the_demand_charge_while_v2g_evs_are_plugged_in() -> None:
    sc = load_scenario(bundled_scenario("v2g-depot"))
    auto = metrics(simulate(sc, make_policy("mpc")))
    whole = metrics(simulate(sc, make_policy("mpc", amortize_peak=False)))
    # Weighing each night's peak by the whole week's charge, the plan charges flat and hardly
    # discharges; weighing it by the night's share, it sells at the evening price.
    assert auto["v2g_export_kwh"] > 1.2 * whole["v2g_export_kwh"]
    assert auto["total_cost"] < 0.95 * whole["total_cost"]
    assert auto["energy_delivered_fraction"] == pytest.approx(1.0)
    assert auto["over_limit_kwh"] == 0.0


def test_offline_delivers_what_it_planned_to_every_session() -> None:
    # Following a plan, the catch-up of EVs owed energy (their planned power fell below the
    # minimum current) comes after the plan's own powers: an EV planned at full power for its
    # whole stay is not levelled down to make room (it used to lose up to 1.8 kWh here).
    sc = load_scenario(bundled_scenario("caltech-week"))
    policy = make_policy("offline")
    ds = simulate(sc, policy)
    planned = policy.schedule.p_kw.sum(axis=1) * sc.dt_s / 3600  # type: ignore[attr-defined]
    delivered = ds.energy_delivered_kwh.to_numpy()
    assert (planned - delivered).max() < 0.25
    assert metrics(ds)["over_limit_kwh"] == 0.0


def _learning_scenario(tmp_path: Path, name: str, last_departure_h: float) -> Path:
    """Two drivers who leave an hour before their estimate, then a third EV."""
    t0 = pd.Timestamp(START)

    def at(h: float) -> str:
        return (t0 + pd.Timedelta(hours=h)).isoformat()

    rows = [
        ("s0", "cp-1", 0.0, 2.0, 3.0),
        ("s1", "cp-2", 0.0, 2.0, 3.0),
        ("s2", "cp-1", 2.5, last_departure_h, 5.5),
    ]
    sessions = pd.DataFrame(
        [
            {
                "session_id": sid,
                "charger_id": c,
                "arrival": at(a),
                "departure": at(d),
                "departure_estimate": at(e),
                "energy_kwh": 10.0,
                "max_kw": 7.4,
            }
            for sid, c, a, d, e in rows
        ]
    )
    return write_scenario(tmp_path / name, sessions=sessions)


def test_mpc_learns_how_far_drivers_leave_from_their_estimates(tmp_path: Path) -> None:
    sc = load_scenario(_learning_scenario(tmp_path, "learn", 5.0))
    policy = _Recording(learn_estimates=True, learn_min_sessions=2, early_penalty_per_kwh=2.0)
    simulate(sc, policy)
    plans = dict(policy.seen)
    # 15-minute steps: s0 and s1 were believed to leave at step 12 and left at step 8.
    assert sorted(policy.errors) == [-4, -4, -2]
    # s2 plugs in at step 10 with an estimate of step 22: planned on 22 - 4 = 18.
    assert plans[10][2] == (18, 18)
    # Still here at step 18, past every departure seen that far ahead: it leaves next step.
    assert plans[18][2] == (19, 19)
    # Without learning, nothing is learned and the estimate is the plan.
    plain = _Recording()
    simulate(sc, plain)
    assert plain.seen == []
    assert plain.forecast_step == {}


def test_learning_from_departures_never_peeks_at_the_ones_to_come(tmp_path: Path) -> None:
    early = load_scenario(_learning_scenario(tmp_path, "early", 4.0))
    late = load_scenario(_learning_scenario(tmp_path, "late", 5.0))
    runs = [
        simulate(sc, make_policy("mpc", learn_estimates=True, learn_min_sessions=2))
        for sc in (early, late)
    ]
    first_difference = 16  # s2 leaves at 04:00 in one, 05:00 in the other
    np.testing.assert_array_equal(
        runs[0].power_kw[:first_difference].to_numpy(),
        runs[1].power_kw[:first_difference].to_numpy(),
    )


def test_learn_min_sessions_must_be_positive() -> None:
    with pytest.raises(AmpflowError, match="learn_min_sessions"):
        MPC(learn_estimates=True, learn_min_sessions=0)


@pytest.mark.parametrize("name", ["departure_quantile", "early_quantile"])
@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, float("nan"), "0.1"])
def test_quantiles_must_lie_in_the_open_unit_interval(name: str, value: object) -> None:
    with pytest.raises(AmpflowError, match=f"{name} must be a number in \\(0, 1\\), got"):
        MPC(**{name: value})
