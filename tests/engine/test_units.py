"""A <-> kW conversion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ampflow.engine.units import a_from_kw, kw_from_a


def test_known_values() -> None:
    assert float(kw_from_a(32, voltage_v=230, phases=3)) == pytest.approx(22.08)
    assert float(kw_from_a(32, voltage_v=230, phases=1)) == pytest.approx(7.36)
    assert float(kw_from_a(16, voltage_v=230, phases=3, power_factor=0.9)) == pytest.approx(9.936)
    np.testing.assert_allclose(a_from_kw([0, 7.36], voltage_v=230, phases=1), [0, 32])


@given(
    st.floats(0, 1000),
    st.sampled_from([120.0, 208.0, 230.0, 240.0]),
    st.sampled_from([1, 2, 3]),
    st.floats(0.5, 1.0),
)
def test_round_trip(i_a: float, v: float, phases: int, pf: float) -> None:
    p = kw_from_a(i_a, voltage_v=v, phases=phases, power_factor=pf)
    assert float(a_from_kw(p, voltage_v=v, phases=phases, power_factor=pf)) == pytest.approx(i_a)


@pytest.mark.parametrize("kwargs", [{"voltage_v": 0}, {"phases": 0}, {"power_factor": 1.5}])
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="voltage_v and phases must be > 0"):
        kw_from_a(10, **kwargs)
