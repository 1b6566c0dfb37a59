"""``mpc(base_load=...)``: the background of the horizon forecast from the site's meters, not
held at its value now; fitted only on data before the replay, never shown the future."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ampflow.engine.errors import AmpflowError
from ampflow.forecasting import BaseLoadForecaster
from ampflow.scenarios.format import load_scenario
from ampflow.scenarios.policies import make_policy
from ampflow.scenarios.simulator import simulate
from tests.scenarios.conftest import START, write_scenario

SHIFT_KW = 34.0  # a workshop from 08:00 to 18:00 on the 40 kW connection


def _shift(times: pd.DatetimeIndex) -> np.ndarray:
    local = times.tz_convert("Europe/Amsterdam")
    return np.where((local.hour >= 8) & (local.hour < 18), SHIFT_KW, 0.0)


def _scenario(tmp_path: Path, *, base_kw: np.ndarray | None = None) -> Path:
    """An EV plugged in at 06:00 wanting 40 kWh by 12:00 at up to 11 kW, a demand charge, and
    the workshop's base load from 08:00 (which leaves 6 kW)."""
    start = pd.Timestamp(START)
    times = pd.date_range(start, periods=12 * 4, freq="15min")
    sessions = pd.DataFrame(
        [
            {
                "session_id": "ev",
                "charger_id": "cp-1",
                "arrival": (start + pd.Timedelta(hours=6)).isoformat(),
                "departure": (start + pd.Timedelta(hours=12)).isoformat(),
                "energy_kwh": 40.0,
                "max_kw": 11.0,
            }
        ]
    )
    base = pd.DataFrame(
        {
            "time": [t.isoformat() for t in times],
            "kw": _shift(times) if base_kw is None else base_kw,
        }
    )
    prices = pd.DataFrame({"time": [t.isoformat() for t in times[::4]], "import_per_kwh": 0.2})
    return write_scenario(
        tmp_path / "shift",
        sessions=sessions,
        prices=prices,
        tables={"base_load": base},
        extra={"demand_charge_per_kw": 10.0},
        hours=12,
    )


def _forecaster() -> BaseLoadForecaster:
    """Fitted on the four weeks before the replay: the same weekday shifts."""
    start = pd.Timestamp(START)
    history = pd.date_range(start - pd.Timedelta(days=28), start, freq="15min", inclusive="left")
    y = pd.Series(_shift(history), index=history.tz_convert("UTC"))
    return BaseLoadForecaster(step="15min", timezone="Europe/Amsterdam", max_iter=50).fit(y)


def test_a_forecast_base_load_lets_the_ev_charge_before_the_shift(tmp_path: Path) -> None:
    sc = load_scenario(_scenario(tmp_path))
    blind = simulate(sc, make_policy("mpc"))
    seen = simulate(sc, make_policy("mpc", base_load={"depot": _forecaster()}))
    for ds in (blind, seen):
        assert float(ds.attrs["over_limit_kwh"]) == 0.0
    got = {
        name: ds.energy_delivered_kwh.sel(session="ev").item()
        for name, ds in (("blind", blind), ("seen", seen))
    }
    # Held at 0 kW, the background gives a flat 6.7 kW plan, and the 6 kW left from 08:00 is
    # not enough; knowing the shift, the plan charges at 11 kW before it.
    assert got["seen"] == pytest.approx(40.0, abs=0.1)
    assert got["blind"] < 39.0
    early = seen.power_kw.sel(session="ev").to_numpy()[24:32]  # 06:00 to 08:00
    assert early.min() >= 10.9


def test_the_forecaster_never_sees_the_future(tmp_path: Path) -> None:
    """Two replays whose base load differs only after 09:00 decide the same until then."""
    sc = load_scenario(_scenario(tmp_path / "a"))
    times = pd.date_range(pd.Timestamp(START), periods=48, freq="15min")
    other = _shift(times)
    other[36:] = 10.0  # from 09:00
    sc2 = load_scenario(_scenario(tmp_path / "b", base_kw=other))
    calls: list[pd.Timestamp] = []

    class Spy(BaseLoadForecaster):
        def predict(self, index, *, history=None, X=None, at=None):  # type: ignore[no-untyped-def]
            assert history is not None
            assert (history.index < pd.Timestamp(at)).sum() == len(history) - 1
            calls.append(pd.Timestamp(at))
            return super().predict(index, history=history, X=X, at=at)

    model = Spy(step="15min", timezone="Europe/Amsterdam", max_iter=50)
    model.set_params()
    fitted = _forecaster()
    model.__dict__.update(fitted.__dict__)
    a = simulate(sc, make_policy("mpc", base_load={"depot": model}))
    b = simulate(sc2, make_policy("mpc", base_load={"depot": model}))
    assert calls
    until = 36
    np.testing.assert_array_equal(a.power_kw.to_numpy()[:until], b.power_kw.to_numpy()[:until])


def test_forecasters_for_unknown_sites_are_an_error(tmp_path: Path) -> None:
    sc = load_scenario(_scenario(tmp_path))
    with pytest.raises(AmpflowError, match="unknown site"):
        simulate(sc, make_policy("mpc", pv={"elsewhere": _forecaster()}))
