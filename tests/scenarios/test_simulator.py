"""The simulator: EV model, recorded violations, no peeking, and the safety invariants."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampflow.scenarios import load_scenario
from ampflow.scenarios.policies import POLICIES, make_policy
from ampflow.scenarios.results import metrics, read_result, write_result
from ampflow.scenarios.simulator import Observation, PolicyContext, simulate
from tests.scenarios.conftest import SITE, START, write_scenario

CONTROLLED = [p for p in POLICIES if p != "uncontrolled"]
T0 = pd.Timestamp(START)


def _at(hours: float) -> str:
    return (T0 + pd.Timedelta(hours=hours)).isoformat()


@dataclass
class Fixed:
    """A policy that issues the same limits every step."""

    limits: np.ndarray
    name: str = "fixed"
    needs_truth: bool = False

    def reset(self, context: PolicyContext) -> None:
        pass

    def decide(self, obs: Observation) -> np.ndarray:
        return self.limits


@dataclass
class Recorder:
    """Wraps a policy and records every observation it is shown."""

    inner: object
    seen: list[Observation] = field(default_factory=list)
    name: str = "recorder"
    needs_truth: bool = False

    def reset(self, context: PolicyContext) -> None:
        assert context.truth is None
        self.inner.reset(context)  # type: ignore[attr-defined]

    def decide(self, obs: Observation) -> np.ndarray:
        self.seen.append(obs)
        return self.inner.decide(obs)  # type: ignore[attr-defined,no-any-return]


def _one(tmp_path: Path, **session: object) -> Path:
    row = {
        "session_id": "a",
        "charger_id": "dc-1",
        "arrival": _at(0),
        "departure": _at(6),
        "energy_kwh": 40.0,
        "max_kw": 50.0,
    }
    row.update(session)
    return write_scenario(tmp_path, sessions=pd.DataFrame([row]))


def test_ev_tapers_above_80_percent(tmp_path: Path) -> None:
    sc = load_scenario(_one(tmp_path, battery_kwh=50.0, soc_arrival=0.6, energy_kwh=20.0))
    ds = simulate(sc, make_policy("uncontrolled"))
    p = ds.power_kw.sel(session="a").to_numpy()
    soc = 0.6 + np.concatenate([[0], np.cumsum(p)[:-1]]) * 0.25 / 50
    assert p[0] == pytest.approx(50.0)  # uncontrolled: the EV's full 50 kW below 80 %
    assert np.all(p[soc > 0.8 + 1e-9] < 50 * (1 - soc[soc > 0.8 + 1e-9]) / 0.2 + 1e-9)
    assert np.all(np.diff(p[(soc > 0.8) & (p > 0)]) <= 1e-9)  # tapering, never rising
    assert float(ds.energy_delivered_kwh.sel(session="a")) <= 20.0 + 1e-9


def test_limit_below_minimum_pauses_the_ev(tmp_path: Path) -> None:
    sc = load_scenario(_one(tmp_path, charger_id="cp-2", max_kw=7.4))
    col = sc.topology.connector_index("depot/cp-2/1")
    limits = np.zeros(sc.topology.n_connectors)
    limits[col] = 1.0  # below 6 A at 230 V (1.38 kW)
    ds = simulate(sc, Fixed(limits))
    assert float(ds.energy_delivered_kwh.sum()) == 0.0
    limits[col] = 2.0
    ds = simulate(sc, Fixed(limits))
    assert float(ds.power_kw.max()) == pytest.approx(2.0)


def test_violations_are_recorded_not_hidden(tmp_path: Path) -> None:
    sc = load_scenario(_one(tmp_path))
    limits = np.zeros(sc.topology.n_connectors)
    limits[sc.topology.connector_index("depot/dc-1/1")] = 50.0  # the site allows 40 kW
    limits[sc.topology.connector_index("depot/cp-2/1")] = 3.0  # nothing plugged there
    ds = simulate(sc, Fixed(limits))
    m = metrics(ds)
    # 10 kW over for the 48 min the EV charges at 50 kW, and 3 kW on an empty connector.
    assert m["over_limit_kwh"] == pytest.approx(10.0 * 0.75, rel=1e-6)
    assert m["issued_over_limit_kwh"] > m["over_limit_kwh"]
    assert float(ds.over_limit_kw.max()) == pytest.approx(10.0)


def test_uncontrolled_overloads_and_controlled_policies_do_not(tiny: Path) -> None:
    rows = [
        {
            "session_id": f"s{k}",
            "charger_id": c,
            "arrival": _at(0.5),
            "departure": _at(5),
            "energy_kwh": 60.0,
            "max_kw": 50.0,
        }
        for k, c in enumerate(["cp-1", "cp-1", "cp-2", "dc-1"])
    ]
    sc = load_scenario(write_scenario(tiny.parent / "busy", sessions=pd.DataFrame(rows)))
    assert metrics(simulate(sc, make_policy("uncontrolled")))["over_limit_kwh"] > 10
    for name in CONTROLLED:
        m = metrics(simulate(sc, make_policy(name)))
        assert m["over_limit_kwh"] == 0.0, name
        assert m["issued_over_limit_kwh"] == 0.0, name
        assert m["peak_kw"] <= 40.0 + 1e-6, name


def _estimates(tmp_path: Path, name: str, departures: list[float]) -> Path:
    rows = [
        {
            "session_id": f"s{k}",
            "charger_id": c,
            "arrival": _at(0.25 * k),
            "departure": _at(d),
            "departure_estimate": _at(3.0 + k * 0.5),
            "energy_kwh": 25.0,
            "max_kw": 22.0 if c.startswith("cp-1") else 7.4,
        }
        for k, (c, d) in enumerate(zip(["cp-1", "cp-2", "cp-1"], departures, strict=True))
    ]
    return write_scenario(tmp_path / name, sessions=pd.DataFrame(rows))


@pytest.mark.parametrize("policy", ["edf", "llf", "mpc", "allocator"])
def test_policies_see_estimates_never_the_true_departure(tmp_path: Path, policy: str) -> None:
    early = load_scenario(_estimates(tmp_path, "early", [4.0, 4.5, 4.25]))
    late = load_scenario(_estimates(tmp_path, "late", [5.5, 5.75, 5.5]))
    runs = []
    for sc in (early, late):
        rec = Recorder(make_policy(policy))
        ds = simulate(sc, rec)
        runs.append((rec.seen, ds))
    (seen_a, ds_a), (seen_b, ds_b) = runs
    first_departure = 16  # 04:00 at 15-minute steps
    for a, b in zip(seen_a[:first_departure], seen_b[:first_departure], strict=True):
        np.testing.assert_array_equal(a.session, b.session)
        np.testing.assert_array_equal(a.departure_step, b.departure_step)
        np.testing.assert_allclose(a.energy_remaining_kwh, b.energy_remaining_kwh)
    np.testing.assert_allclose(
        ds_a.power_kw[:first_departure].to_numpy(), ds_b.power_kw[:first_departure].to_numpy()
    )
    # What they saw was the estimate (3 h, 3.5 h, 4 h), pushed on only once it had passed.
    at1 = seen_a[8]
    np.testing.assert_array_equal(at1.departure_step, [12, 14, 16][: len(at1)])
    at_late = seen_b[14]
    assert at_late.departure_step[0] == 15  # staying past the 3 h estimate: "leaves next step"


def test_an_estimate_off_the_step_grid_is_believed_to_its_last_full_step(tmp_path: Path) -> None:
    # The EV leaves at 04:06, so it charges in the steps up to 04:00 only. Told the truth as its
    # estimate, a policy must believe exactly that, not one step more (rounding the estimate
    # up made mpc plan 4.25 h for a 4 h stay and leave a step's energy undelivered).
    rows = pd.DataFrame(
        [
            {
                "session_id": "s0",
                "charger_id": "cp-2",
                "arrival": _at(0.0),
                "departure": _at(4.1),
                "departure_estimate": _at(4.1),
                "energy_kwh": 7.4 * 4,
                "max_kw": 7.4,
            }
        ]
    )
    flat = pd.DataFrame(
        {
            "time": [(T0 + pd.Timedelta(hours=h)).isoformat() for h in range(6)],
            "import_per_kwh": [0.2] * 6,
        }
    )
    sc = load_scenario(
        write_scenario(
            tmp_path / "grid",
            sessions=rows,
            prices=flat,
            extra={"demand_charge_per_kw": 10.0},
        )
    )
    rec = Recorder(make_policy("mpc"))
    ds = simulate(sc, rec)
    assert rec.seen[0].departure_step.tolist() == [16]  # 04:00 at 15-minute steps
    # Needing full power for the whole stay, mpc must not spread it over a step that is not there.
    delivered = float(ds.energy_delivered_kwh.sum())
    assert delivered == pytest.approx(7.4 * 4, abs=1e-6)


def _site(import_kw: float, export_kw: float) -> dict[str, object]:
    """The test site with these grid limits and a 32/40/32 A panel."""
    panel = {"id": "panel", "parent": "depot", "phase_a": [32, 40, 32]}
    return {**SITE, "import_kw": import_kw, "export_kw": export_kw, "nodes": [panel]}


def _random_scenario(tmp: Path, data: st.DataObject) -> Path:
    n = data.draw(st.integers(1, 4), label="sessions")
    chargers = ["cp-1", "cp-1", "cp-2", "dc-1"][:n]
    rows = []
    for k, c in enumerate(chargers):
        a = data.draw(st.integers(0, 16), label=f"arrival{k}") * 0.25
        d = a + data.draw(st.integers(1, 8), label=f"dwell{k}") * 0.25 + 0.1
        row: dict[str, object] = {
            "session_id": f"s{k}",
            "charger_id": c,
            "arrival": _at(a),
            "departure": _at(min(d, 6.0)),
            "energy_kwh": data.draw(st.floats(0, 40), label=f"energy{k}"),
            "max_kw": data.draw(st.floats(2, 60), label=f"max{k}"),
        }
        if c == "dc-1" and data.draw(st.booleans(), label="v2g"):
            soc = data.draw(st.floats(0.2, 0.6), label="soc")
            row.update(battery_kwh=80.0, soc_arrival=soc, v2g="true")
            row["energy_kwh"] = min(float(row["energy_kwh"]), 80 * (1 - soc))  # type: ignore[call-overload]
        rows.append(row)
    import_kw = data.draw(st.floats(5, 60), label="import_kw")
    site = _site(import_kw, data.draw(st.floats(0, 30), label="export_kw"))
    tables = {}
    if data.draw(st.booleans(), label="dr"):
        s = data.draw(st.integers(0, 20), label="dr_start") * 0.25
        tables["events"] = pd.DataFrame(
            {
                "site_id": ["depot"],
                "start": [_at(s)],
                "end": [_at(s + 1)],
                "cap_kw": [data.draw(st.floats(0, 30), label="cap")],
            }
        )
    if data.draw(st.booleans(), label="base"):
        times = pd.date_range(T0, periods=7, freq="h")
        tables["base_load"] = pd.DataFrame(
            {
                "time": [t.isoformat() for t in times],
                "kw": data.draw(st.lists(st.floats(0, 20), min_size=7, max_size=7), label="bl"),
            }
        )
    return write_scenario(tmp, sessions=pd.DataFrame(rows), tables=tables, extra={"sites": [site]})


def _bus_and_cars(tmp: Path, kwh: dict[str, float], **tables: pd.DataFrame) -> Path:
    """Cars of 2 kW on the 22 kW connectors (whose minimum is 6 A x 3 phases = 4.1 kW), a V2G
    bus, and a grid connection of 5 kW that may export nothing (from hypothesis' findings)."""
    rows: list[dict[str, object]] = []
    for sid, charger, hours in (("s0", "cp-1", 0.35), ("s1", "cp-1", 0.35), ("s2", "cp-2", 0.35)):
        if sid in kwh:
            rows.append(
                {
                    "session_id": sid,
                    "charger_id": charger,
                    "arrival": _at(0),
                    "departure": _at(hours),
                    "energy_kwh": kwh[sid],
                    "max_kw": 2.0,
                }
            )
    rows.append(
        {
            "session_id": "bus",
            "charger_id": "dc-1",
            "arrival": _at(0),
            "departure": _at(1.35),
            "energy_kwh": kwh["bus"],
            "max_kw": 2.0,
            "battery_kwh": 80.0,
            "soc_arrival": 0.5,
            "v2g": "true",
        }
    )
    return write_scenario(
        tmp, sessions=pd.DataFrame(rows), extra={"sites": [_site(5.0, 0.0)]}, tables=tables
    )


@pytest.mark.parametrize("policy", ["mpc", "offline"])
def test_v2g_discharge_is_not_exported_when_the_load_it_fed_is_not_drawn(
    tmp_path: Path, policy: str
) -> None:
    """The plan discharged the bus at 2 kW into a car it planned at 2 kW, below its
    connector's minimum: the car got nothing and the 2 kW went to a connection that may
    export nothing."""
    sc = load_scenario(_bus_and_cars(tmp_path, {"s0": 0.0, "s1": 1.0, "bus": 0.0}))
    m = metrics(simulate(sc, make_policy(policy)))
    assert m["issued_over_limit_kwh"] == 0.0
    assert m["over_limit_kwh"] == 0.0


def test_metrics_of_a_vanishing_request(tmp_path: Path) -> None:
    """A bus asking for 2.2e-313 kWh that leaves with 0.25 kWh less than it came with (it fed a
    car at 23:00 and could not recharge at 00:00, when a base load the plan did not foresee
    took the connection): its share served is 0, not an overflow of -0.25 / 2.2e-313."""
    times = pd.date_range(T0, periods=7, freq="h")
    base = pd.DataFrame(
        {"time": [t.isoformat() for t in times], "kw": [0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0]}
    )
    kwh = {"s0": 0.0, "s1": 0.0, "s2": 1.0, "bus": 2.2250738585e-313}
    sc = load_scenario(_bus_and_cars(tmp_path, kwh, base_load=base))
    ds = simulate(sc, make_policy("mpc"))
    delivered = dict(zip(ds.session.values, ds.energy_delivered_kwh.values, strict=True))
    assert delivered["s2"] == pytest.approx(0.5)
    assert delivered["bus"] == pytest.approx(-0.25)
    m = metrics(ds)
    assert m["jain_fairness"] == pytest.approx(0.5)  # shares 0.5 and 0
    assert m["over_limit_kwh"] == 0.0


@pytest.mark.parametrize("policy", CONTROLLED)
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_invariants_hold_for_every_controlled_policy(
    tmp_path_factory: pytest.TempPathFactory, policy: str, data: st.DataObject
) -> None:
    sc = load_scenario(_random_scenario(tmp_path_factory.mktemp("s"), data))
    ds = simulate(sc, make_policy(policy))
    m = metrics(ds)
    # Every node and phase within its limit, DR caps included, as issued and as drawn.
    assert m["issued_over_limit_kwh"] == 0.0
    assert m["over_limit_kwh"] == 0.0
    power = ds.power_kw.to_numpy()
    df = sc.sessions
    t = ds.time.to_numpy()[:, None]
    step = np.timedelta64(sc.dt_s, "s")
    # A session may draw in the step it arrives in (rounded up) until the step it leaves in.
    inside = (t + step > ds.arrival.to_numpy()[None, :]) & (t < ds.departure.to_numpy()[None, :])
    assert np.all(power[~inside] == 0.0)  # never outside the session's window
    assert np.all(power <= df.max_kw.to_numpy()[None, :] + 1e-9)  # never over the EV's max
    delivered = ds.energy_delivered_kwh.to_numpy()
    assert np.all(delivered <= df.energy_kwh.to_numpy() + 1e-9)  # never over the request
    v2g = df.v2g.to_numpy()
    if v2g.any():
        soc0 = (df.soc_arrival * df.battery_kwh).to_numpy()[v2g]
        soc = soc0 + np.cumsum(power[:, v2g], axis=0) * sc.dt_s / 3600
        assert soc.min() >= 0.1 * 80 - 1e-6
        assert soc.max() <= 80 + 1e-6


def test_results_round_trip_through_netcdf(tiny: Path, tmp_path: Path) -> None:
    ds = simulate(load_scenario(tiny), make_policy("llf"))
    back = read_result(write_result(ds, tmp_path / "r.nc"))
    assert back.power_kw.dims == ("time", "session")
    assert back.site_power_kw.attrs["units"] == "kW"
    assert metrics(back) == metrics(ds)
    json.dumps(metrics(back))
    assert set(back.data_vars) >= {
        "power_kw",
        "site_power_kw",
        "site_limit_kw",
        "energy_requested_kwh",
        "energy_delivered_kwh",
        "price",
    }


def test_metrics_add_up(tiny: Path) -> None:
    sc = load_scenario(tiny)
    ds = simulate(sc, make_policy("uncontrolled"))
    m = metrics(ds)
    site = ds.site_power_kw.to_numpy()[:, 0]
    assert m["peak_kw"] == pytest.approx(site.max())
    assert m["energy_cost"] == pytest.approx(float((sc.import_price[0] * site).sum() * 0.25))
    assert m["total_cost"] == pytest.approx(m["energy_cost"] + m["demand_charge"])
    assert m["energy_delivered_kwh"] == pytest.approx(float(site.sum() * 0.25))
    assert m["dr_compliance"] is None
    assert 0 < m["jain_fairness"] <= 1


@dataclass
class _Forecaster:
    """Predicts a fixed dwell; records every frame it is shown."""

    dwell_h: float
    frames: list[pd.DataFrame] = field(default_factory=list)

    def predict_sessions(self, X: pd.DataFrame) -> pd.DataFrame:
        self.frames.append(X.copy())
        return pd.DataFrame({"dwell_h_q25": self.dwell_h}, index=X.index)


def test_mpc_plans_on_a_forecaster_shown_only_plug_in_information(tmp_path: Path) -> None:
    sc = load_scenario(_estimates(tmp_path, "s", [4.0, 4.5, 4.25]))
    fc = _Forecaster(dwell_h=1.0)
    ds = simulate(sc, make_policy("mpc", forecaster=fc, departure_quantile=0.25))
    shown = pd.concat(fc.frames)
    assert sorted(shown.session_id) == ["s0", "s1", "s2"]  # each asked once, at plug-in
    assert not {"departure", "energy_kwh"} & set(shown.columns)
    assert {"arrival", "station_id", "estimated_departure", "claimed"} <= set(shown.columns)
    for frame in fc.frames:  # never a session before it arrived
        assert (frame.arrival <= sc.start + pd.Timedelta(hours=6)).all()
    # Planning on a 1-hour dwell front-loads: the first EV gets most of its energy in its first
    # hour, unlike a plan on the driver's 3-hour estimate.
    base = simulate(sc, make_policy("mpc"))
    first_hour = slice(0, 5)
    assert float(ds.power_kw.sel(session="s0")[first_hour].sum()) > float(
        base.power_kw.sel(session="s0")[first_hour].sum()
    )
    assert metrics(ds)["over_limit_kwh"] == 0.0
