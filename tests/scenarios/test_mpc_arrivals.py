"""MPC with an arrival forecaster: capacity reserved for EVs that have not arrived, no peeking."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampflow.engine.errors import AmpflowError
from ampflow.forecasting import ArrivalForecaster, fit_before
from ampflow.scenarios import Scenario, bundled_scenario, load_scenario
from ampflow.scenarios.acn import CALTECH_TZ, acn_path, read_acn
from ampflow.scenarios.planning import MPC
from ampflow.scenarios.policies import make_policy
from ampflow.scenarios.results import metrics
from ampflow.scenarios.simulator import Observation, PolicyContext, simulate
from tests.scenarios.conftest import START, write_scenario
from tests.scenarios.test_simulator import _random_scenario

T0 = pd.Timestamp(START)

# A small site: two 22 kW connectors behind a 22 kW grid connection.
SMALL_SITE = {
    "id": "depot",
    "import_kw": 22.0,
    "voltage_v": 230,
    "chargers": [
        {"id": "cp-a", "max_kw": 22, "phases": 3},
        {"id": "cp-b", "max_kw": 22, "phases": 3},
    ],
}


def _at(hours: float) -> str:
    return (T0 + pd.Timedelta(hours=hours)).isoformat()


@dataclass
class KnownArrivals:
    """An arrival forecast given outright: ``arrivals`` EVs in the step starting ``at`` each
    bringing ``energy_kwh`` and staying ``dwell_h``; records every index it is asked for."""

    at: pd.Timestamp
    arrivals: float = 1.0
    energy_kwh: float = 40.0
    dwell_h: float = 2.0
    step_s_: int = 900
    asked: list[pd.DatetimeIndex] = field(default_factory=list)

    def predict(
        self, index: pd.DatetimeIndex, *, sites: tuple[str, ...] | None = None
    ) -> pd.DataFrame:
        self.asked.append(index)
        hit = np.asarray(index == self.at, dtype=np.float64) * self.arrivals
        frames = []
        for site in sites or ("depot",):
            frames.append(
                pd.DataFrame(
                    {
                        "arrivals": hit,
                        "expected_energy_kwh": hit * self.energy_kwh,
                        "dwell_h_median": np.full(len(index), self.dwell_h),
                    },
                    index=pd.MultiIndex.from_arrays(
                        [[site] * len(index), index], names=["site_id", "time"]
                    ),
                )
            )
        return pd.concat(frames)


@dataclass
class Clock:
    """Wraps a policy and keeps the step it is deciding, for checks from inside a forecaster."""

    inner: MPC
    t: list[int] = field(default_factory=list)
    name: str = "clock"
    needs_truth: bool = False

    def reset(self, context: PolicyContext) -> None:
        assert context.truth is None
        self.inner.reset(context)

    def decide(self, obs: Observation) -> np.ndarray:
        self.t.append(obs.t)
        return self.inner.decide(obs)


def _small(tmp_path: Path) -> Scenario:
    """A present EV staying 4 h, and a big EV arriving at 02:00 that needs 20 kW for 2 h."""
    rows = [
        {
            "session_id": "now",
            "charger_id": "cp-a",
            "arrival": _at(0),
            "departure": _at(4),
            "energy_kwh": 20.0,
            "max_kw": 22.0,
        },
        {
            "session_id": "later",
            "charger_id": "cp-b",
            "arrival": _at(2),
            "departure": _at(4),
            "energy_kwh": 40.0,
            "max_kw": 22.0,
        },
    ]
    flat = pd.DataFrame(
        {
            "time": [t.isoformat() for t in pd.date_range(T0, periods=6, freq="h")],
            "import_per_kwh": 0.2,
        }
    )
    path = write_scenario(
        tmp_path,
        sessions=pd.DataFrame(rows),
        prices=flat,
        extra={"sites": [SMALL_SITE], "demand_charge_per_kw": 10.0},
    )
    return load_scenario(path)


def test_expected_arrival_makes_the_present_ev_charge_before_it(tmp_path: Path) -> None:
    sc = _small(tmp_path)
    forecast = KnownArrivals(at=T0 + pd.Timedelta(hours=2))
    with_arrivals = simulate(sc, make_policy("mpc", arrivals=forecast, arrival_block_h=0.25))
    without = simulate(sc, make_policy("mpc"))
    first_2h = slice(0, 8)  # 15-minute steps
    early = {
        name: float(ds.power_kw.sel(session="now")[first_2h].sum() * 0.25)
        for name, ds in (("with", with_arrivals), ("without", without))
    }
    # Blind to the big EV, the plan spreads the present one over its 4 h (20 kWh at 5 kW);
    # expecting it, the plan gets the present EV (nearly) done before 02:00.
    assert early["without"] < 11.0
    assert early["with"] > 15.0
    # Blind, the two then need 25 kW from a 22 kW site for 2 h: 6 kWh are lost. Expecting it,
    # everything is delivered, at a peak no higher.
    delivered = {
        name: float(ds.energy_delivered_kwh.sum())
        for name, ds in (("with", with_arrivals), ("without", without))
    }
    assert delivered["with"] == pytest.approx(60.0, abs=0.05)
    assert delivered["without"] < 58.0
    assert float(with_arrivals.site_power_kw.max()) <= float(without.site_power_kw.max()) + 1e-6
    for ds in (with_arrivals, without):
        assert metrics(ds)["over_limit_kwh"] == 0.0


def test_the_plan_only_follows_real_evs(tmp_path: Path) -> None:
    sc = _small(tmp_path)
    forecast = KnownArrivals(at=T0 + pd.Timedelta(hours=2))
    ds = simulate(sc, make_policy("mpc", arrivals=forecast, arrival_block_h=0.25))
    # The phantom sits on the idle connector cp-b: nothing is issued there before the real EV.
    before = ds.power_kw.sel(session="later")[:8]
    assert float(np.abs(before).sum()) == 0.0
    assert metrics(ds)["issued_over_limit_kwh"] == 0.0


def test_the_policy_asks_only_for_steps_from_now_on(tmp_path: Path) -> None:
    sc = _small(tmp_path)
    forecast = KnownArrivals(at=T0 + pd.Timedelta(hours=2))
    policy = MPC(arrivals=forecast, arrival_block_h=0.25, horizon_h=3.0)
    clock = Clock(policy)
    seen_at: list[int] = []

    def predict(index: pd.DatetimeIndex, *, sites: tuple[str, ...] | None = None) -> pd.DataFrame:
        seen_at.append(clock.t[-1])
        return KnownArrivals.predict(forecast, index, sites=sites)

    forecast.predict = predict  # type: ignore[method-assign]
    simulate(sc, clock)
    assert forecast.asked
    step = pd.Timedelta(seconds=forecast.step_s_)
    asked_steps: list[pd.Timestamp] = []
    for index, t in zip(forecast.asked, seen_at, strict=True):
        now = sc.start + pd.Timedelta(seconds=t * sc.dt_s)
        assert index[0] + step > now  # never a step that ended before now
        assert index[-1] < now + pd.Timedelta(hours=3)  # nothing past the horizon
        asked_steps += list(index)
    assert len(asked_steps) == len(set(asked_steps))  # each step asked once


def _history(energy_after: float, extra_after: int) -> pd.DataFrame:
    """Three weeks of one EV a day at 01:30 before the replay, and anything after it."""
    days = pd.date_range(T0 - pd.Timedelta(days=21), periods=21, freq="D")
    arrival = days + pd.Timedelta(hours=1.5)
    before = pd.DataFrame(
        {
            "site_id": "depot",
            "arrival": arrival,
            "departure": arrival + pd.Timedelta(hours=2),
            "energy_kwh": 40.0,
        }
    )
    after_arrival = T0 + pd.to_timedelta(np.arange(1 + extra_after) * 0.5, unit="h")
    after = pd.DataFrame(
        {
            "site_id": "depot",
            "arrival": after_arrival,
            "departure": after_arrival + pd.Timedelta(hours=5),
            "energy_kwh": energy_after,
        }
    )
    return pd.concat([before, after], ignore_index=True)


def test_no_peeking_the_arrival_forecaster_is_fitted_before_the_replay(tmp_path: Path) -> None:
    sc = _small(tmp_path)
    runs = []
    for energy_after, extra_after in ((10.0, 0), (99.0, 12)):
        history = _history(energy_after, extra_after)
        model = fit_before(ArrivalForecaster(timezone="UTC"), history, sc.start, end=sc.start)
        assert model.window_[1] == sc.start
        # The dwell it learns is the 2 h seen before the start, not the 5 h after it.
        day = pd.date_range(sc.start, periods=24, freq="h")
        np.testing.assert_allclose(model.predict(day).dwell_h_median, 2.0)
        runs.append(simulate(sc, make_policy("mpc", arrivals=model)))
    # What happened from the replay start on (the replay's own sessions and any others) changes
    # nothing: the forecast, hence the replay, is the same.
    np.testing.assert_array_equal(runs[0].power_kw.to_numpy(), runs[1].power_kw.to_numpy())
    # And it is used: 40 kWh expected daily at 01:30 moves the present EV earlier than blind.
    blind = simulate(sc, make_policy("mpc"))
    first_2h = slice(0, 8)
    assert float(runs[0].power_kw.sel(session="now")[first_2h].sum()) > float(
        blind.power_kw.sel(session="now")[first_2h].sum()
    )


def test_bad_arrival_options_are_named() -> None:
    with pytest.raises(AmpflowError, match="arrival_weight must be a finite number > 0, got 0"):
        MPC(arrival_weight=0.0)
    with pytest.raises(AmpflowError, match="arrival_block_h"):
        make_policy("mpc", arrival_block_h=-1.0)


@dataclass
class ConstantArrivals:
    """A flat forecast: ``rate`` EVs per step at every site, each bringing ``energy_kwh``."""

    rate: float
    energy_kwh: float
    dwell_h: float
    step_s_: int = 900

    def predict(
        self, index: pd.DatetimeIndex, *, sites: tuple[str, ...] | None = None
    ) -> pd.DataFrame:
        n = len(index)
        chosen = sites or ("depot",)
        return pd.DataFrame(
            {
                "arrivals": np.full(n * len(chosen), self.rate),
                "expected_energy_kwh": np.full(n * len(chosen), self.rate * self.energy_kwh),
                "dwell_h_median": np.full(n * len(chosen), self.dwell_h),
            },
            index=pd.MultiIndex.from_product([chosen, index], names=["site_id", "time"]),
        )


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    rate=st.floats(0.0, 3.0),
    energy=st.floats(0.0, 80.0),
    dwell=st.floats(0.25, 8.0),
)
def test_no_violation_whatever_the_forecast(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    rate: float,
    energy: float,
    dwell: float,
) -> None:
    sc = load_scenario(_random_scenario(tmp_path_factory.mktemp("s"), data))
    ds = simulate(sc, make_policy("mpc", arrivals=ConstantArrivals(rate, energy, dwell)))
    m = metrics(ds)
    assert m["issued_over_limit_kwh"] == 0.0
    assert m["over_limit_kwh"] == 0.0
    delivered = ds.energy_delivered_kwh.to_numpy()
    assert np.all(delivered <= sc.sessions.energy_kwh.to_numpy() + 1e-9)


def _first_day(sc: Scenario) -> Scenario:
    n = 86400 // sc.dt_s
    end = sc.start + pd.Timedelta(days=1)
    return replace(
        sc,
        end=end,
        sessions=sc.sessions[sc.sessions.departure <= end].reset_index(drop=True),
        import_price=sc.import_price[:, :n],
        export_price=sc.export_price[:, :n],
        base_load_kw=sc.base_load_kw[:, :n],
        pv_kw=sc.pv_kw[:, :n],
        cap_kw=sc.cap_kw[:, :n],
        dr_active=sc.dr_active[:, :n],
    )


def test_no_violation_on_a_day_of_the_caltech_dr_week() -> None:
    sc = _first_day(load_scenario(bundled_scenario("caltech-week-dr")))
    history = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    history["site_id"] = sc.topology.site_ids[0]
    model = fit_before(ArrivalForecaster(timezone=CALTECH_TZ), history, sc.start, end=sc.start)
    policy = MPC(arrivals=model)
    ds = simulate(sc, policy)
    m = metrics(ds)
    assert m["over_limit_kwh"] == 0.0
    assert m["issued_over_limit_kwh"] == 0.0
    # Phantoms only shape the plan: the real EVs still get most of what they asked for (blind
    # ``mpc`` delivers 83 % of it on this day, early leavers included).
    assert m["energy_delivered_kwh"] > 0.85 * float(sc.sessions.energy_kwh.sum())
    assert policy.solves > 0
