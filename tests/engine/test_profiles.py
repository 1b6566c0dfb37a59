"""Tests of :mod:`ampflow.engine.profiles`: OCPP charging schedules from planned limits."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampflow.engine.errors import ProblemError
from ampflow.engine.profiles import ChargingRateUnit, OcppVersion, charging_schedule
from ampflow.engine.units import a_from_kw


def _periods(*pairs: tuple[int, float], phases: int | None = 3) -> list[dict[str, Any]]:
    """Expected periods from ``(startPeriod, limit)`` pairs."""
    out: list[dict[str, Any]] = []
    for start_period, limit in pairs:
        period: dict[str, Any] = {"startPeriod": start_period, "limit": limit}
        if phases is not None:
            period["numberPhases"] = phases
        out.append(period)
    return out


def _w_limits(schedule: dict[str, Any]) -> list[tuple[int, float]]:
    return [(p["startPeriod"], p["limit"]) for p in schedule["chargingSchedulePeriod"]]


# --- merging of equal consecutive steps -----------------------------------------------------------


def test_consecutive_equal_steps_merge_into_one_period() -> None:
    schedule = charging_schedule([11.04, 11.04, 7.36, 7.36, 11.04], dt_s=900)
    assert schedule == {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": _periods((0, 16.0), (1800, 10.6), (3600, 16.0)),
        "duration": 4500,
    }


def test_steps_equal_only_after_rounding_merge() -> None:
    # At 1000 V, one phase, a_from_kw is exactly the identity: 16.04 A and 16.09 A both round
    # down to 16.0 A, 16.1 A does not.
    limits = [16.04, 16.09, 16.1]
    assert a_from_kw(limits, voltage_v=1000.0, phases=1).tolist() == limits
    schedule = charging_schedule(limits, dt_s=60, number_phases=1, voltage_v=1000.0)
    assert schedule["chargingSchedulePeriod"] == _periods((0, 16.0), (120, 16.1), phases=1)


def test_constant_plan_is_a_single_period() -> None:
    schedule = charging_schedule(np.full(96, 22.08), dt_s=900, unit="W")
    assert schedule == {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": _periods((0, 22080.0)),
        "duration": 86400,
    }


# --- truncation to max_periods --------------------------------------------------------------------


# Periods in W: 10000 (1 step), 2000 (1), 9000 (2), 1000 (1), 5000 (1); dt 60 s.
# Losses [W steps]: (10000, 2000) = 8000*1, (2000, 9000) = 7000*2, (9000, 1000) = 8000*2,
# (1000, 5000) = 4000*1.
_TRUNCATION_KW = [10.0, 2.0, 9.0, 9.0, 1.0, 5.0]


@pytest.mark.parametrize(
    ("max_periods", "expected"),
    [
        (None, [(0, 10000.0), (60, 2000.0), (120, 9000.0), (240, 1000.0), (300, 5000.0)]),
        (5, [(0, 10000.0), (60, 2000.0), (120, 9000.0), (240, 1000.0), (300, 5000.0)]),
        # cheapest: (1000, 5000) loses 4000 -> one period at 1000
        (4, [(0, 10000.0), (60, 2000.0), (120, 9000.0), (240, 1000.0)]),
        # then (10000, 2000) loses 8000, less than (2000, 9000) = 14000 and (9000, 1000) = 16000
        (3, [(0, 2000.0), (120, 9000.0), (240, 1000.0)]),
        # then (2000, 9000) loses 14000 < (9000, 1000) = 16000
        (2, [(0, 2000.0), (240, 1000.0)]),
        (1, [(0, 1000.0)]),
    ],
)
def test_truncation_merges_least_energy_pair_into_min(
    max_periods: int | None, expected: list[tuple[int, float]]
) -> None:
    schedule = charging_schedule(_TRUNCATION_KW, dt_s=60, unit="W", max_periods=max_periods)
    assert schedule == {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": _periods(*expected),
        "duration": 360,
    }


def test_truncation_weighs_the_loss_by_the_duration_of_the_higher_period() -> None:
    # (10000 x 10 steps, 9000 x 1) loses 1000*10 = 10000; (9000, 5000 x 1) loses 4000*1 = 4000,
    # so the pair with the larger difference in limits is merged.
    limits = [10.0] * 10 + [9.0, 5.0]
    schedule = charging_schedule(limits, dt_s=60, unit="W", max_periods=2)
    assert _w_limits(schedule) == [(0, 10000.0), (600, 5000.0)]


def test_truncation_ties_merge_the_earliest_pair() -> None:
    # (5000, 3000) and (3000, 5000) both lose 2000*1.
    schedule = charging_schedule([5.0, 3.0, 5.0], dt_s=60, unit="W", max_periods=2)
    assert _w_limits(schedule) == [(0, 3000.0), (120, 5000.0)]


def test_truncation_joins_neighbours_left_equal() -> None:
    # Merging (3000, 5000) leaves 3000, 3000, 7000: the equal neighbours are joined too.
    schedule = charging_schedule([3.0, 5.0, 3.0, 7.0], dt_s=60, unit="W", max_periods=3)
    assert _w_limits(schedule) == [(0, 3000.0), (180, 7000.0)]


def test_truncation_in_amps_takes_the_lower_rounded_limit() -> None:
    schedule = charging_schedule([11.04, 7.36, 11.04], dt_s=900, max_periods=1, number_phases=3)
    assert schedule["chargingSchedulePeriod"] == _periods((0, 10.6))


# --- unit conversion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "limit_kw", "unit", "limit"),
    [
        ({"number_phases": 3, "voltage_v": 230.0}, 11.04, "A", 16.0),
        ({"number_phases": 3, "voltage_v": 230.0}, 22.08, "A", 32.0),
        ({"number_phases": 1, "voltage_v": 230.0}, 7.36, "A", 32.0),
        ({"number_phases": 1, "voltage_v": 230.0}, 3.68, "A", 16.0),
        ({"number_phases": 1, "voltage_v": 208.0}, 6.656, "A", 32.0),
        ({"number_phases": 2, "voltage_v": 230.0}, 7.36, "A", 16.0),
        ({"number_phases": 3, "voltage_v": 230.0, "power_factor": 0.5}, 11.04, "A", 32.0),
        # 7.4 kW at 230 V three-phase is 10.7246 A per phase
        ({"number_phases": 3, "voltage_v": 230.0}, 7.4, "A", 10.7),
        ({"number_phases": 3}, 11.04, "W", 11040.0),
        ({"number_phases": 1}, 7.4, "W", 7400.0),
        ({"number_phases": 1, "voltage_v": 208.0}, 0.01234, "W", 12.3),
    ],
)
def test_unit_conversion(kwargs: dict[str, Any], limit_kw: float, unit: str, limit: float) -> None:
    schedule = charging_schedule([limit_kw], dt_s=900, unit=unit, **kwargs)
    assert schedule == {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": _periods((0, limit), phases=kwargs["number_phases"]),
        "duration": 900,
    }


def test_enum_members_are_accepted() -> None:
    by_enum = charging_schedule([7.36], dt_s=60, version=OcppVersion.V201, unit=ChargingRateUnit.W)
    by_str = charging_schedule([7.36], dt_s=60, version="2.0.1", unit="W")
    assert by_enum == by_str
    assert type(by_enum["chargingRateUnit"]) is str


# --- rounding down --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (1.3, 1.3),
        (16.0, 16.0),
        (16.04, 16.0),
        (16.099999, 16.0),
        (float(np.nextafter(1.3, 0.0)), 1.2),
        # just below a tenth where x * 10 rounds up to the integer: floor(x * 10) alone is too high
        (float(np.nextafter(0.9, 0.0)), 0.8),
        (float(np.nextafter(1.8, 0.0)), 1.7),
        (float(np.nextafter(3.7, 0.0)), 3.6),
        (float(np.nextafter(13.4, 0.0)), 13.3),
        (float(np.nextafter(16.1, 0.0)), 16.0),
        (float(np.nextafter(0.1, 0.0)), 0.0),
        (0.1, 0.1),
        (0.3, 0.3),
        (0.7, 0.7),
        (2.675, 2.6),
        (1e-12, 0.0),
        (0.0, 0.0),
    ],
)
def test_limits_are_rounded_down_to_a_tenth(x: float, expected: float) -> None:
    # At 1000 V, one phase, a_from_kw is exactly the identity for these values.
    assert float(a_from_kw(x, voltage_v=1000.0, phases=1)) == x
    schedule = charging_schedule([x], dt_s=1, number_phases=1, voltage_v=1000.0)
    limit = schedule["chargingSchedulePeriod"][0]["limit"]
    assert limit == expected
    assert type(limit) is float
    assert limit <= x < round(limit * 10 + 1) / 10


def test_min_charging_rate_is_rounded_down() -> None:
    schedule = charging_schedule([11.04], dt_s=60, min_charging_rate=6.09)
    assert schedule["minChargingRate"] == 6.0
    schedule = charging_schedule([11.04], dt_s=60, min_charging_rate=float(np.nextafter(6.0, 0.0)))
    assert schedule["minChargingRate"] == 5.9
    schedule = charging_schedule([11.04], dt_s=60, min_charging_rate=6)
    assert schedule["minChargingRate"] == 6.0
    assert type(schedule["minChargingRate"]) is float


# --- OCPP 1.6 vs 2.0.1 shapes ---------------------------------------------------------------------


def test_ocpp16_shape() -> None:
    schedule = charging_schedule(
        [11.04, 7.36],
        dt_s=900,
        version="1.6",
        start=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        min_charging_rate=6.0,
        schedule_id=42,
    )
    assert schedule == {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": _periods((0, 16.0), (900, 10.6)),
        "duration": 1800,
        "startSchedule": "2025-06-01T12:00:00Z",
        "minChargingRate": 6.0,
    }


def test_ocpp201_shape_has_id() -> None:
    schedule = charging_schedule(
        [11.04, 7.36],
        dt_s=900,
        version="2.0.1",
        unit="W",
        start=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        min_charging_rate=1380.0,
        schedule_id=42,
    )
    assert schedule == {
        "id": 42,
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": _periods((0, 11040.0), (900, 7360.0)),
        "duration": 1800,
        "startSchedule": "2025-06-01T12:00:00Z",
        "minChargingRate": 1380.0,
    }


def test_default_is_ocpp16_without_optional_keys() -> None:
    schedule = charging_schedule([11.04], dt_s=900)
    assert set(schedule) == {"chargingRateUnit", "chargingSchedulePeriod", "duration"}


def test_ocpp201_default_id() -> None:
    assert charging_schedule([11.04], dt_s=900, version="2.0.1")["id"] == 1


# --- startSchedule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (datetime(2025, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=1))), "2025-01-01T07:00:00Z"),
        (
            datetime(2025, 3, 30, 20, 30, 15, 999999, tzinfo=timezone(timedelta(hours=-5))),
            "2025-03-31T01:30:15Z",
        ),
        (
            datetime(2024, 2, 29, 5, 45, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2024-02-29T00:15:00Z",
        ),
        (datetime(2025, 6, 1, 0, 0, 0, 1, tzinfo=UTC), "2025-06-01T00:00:00Z"),
    ],
)
def test_start_schedule_is_utc_with_z_suffix(start: datetime, expected: str) -> None:
    assert charging_schedule([11.04], dt_s=900, start=start)["startSchedule"] == expected


# --- numberPhases ---------------------------------------------------------------------------------


def test_include_number_phases_false_omits_the_key() -> None:
    schedule = charging_schedule(
        [3.68, 7.36], dt_s=900, number_phases=1, include_number_phases=False
    )
    assert schedule["chargingSchedulePeriod"] == _periods((0, 16.0), (900, 32.0), phases=None)
    for period in schedule["chargingSchedulePeriod"]:
        assert "numberPhases" not in period


def test_number_phases_is_the_same_in_every_period() -> None:
    schedule = charging_schedule([3.68, 7.36, 0.0], dt_s=900, number_phases=1)
    assert [p["numberPhases"] for p in schedule["chargingSchedulePeriod"]] == [1, 1, 1]


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "kwargs", "match"),
    [
        ([], {}, r"limits_kw must be a non-empty 1-D array .*shape \(0,\)"),
        ([[1.0, 2.0]], {}, r"limits_kw must be a non-empty 1-D array .*shape \(1, 2\)"),
        (3.0, {}, r"limits_kw must be a non-empty 1-D array .*shape \(\)"),
        (["a"], {}, r"limits_kw must be an array of numbers"),
        ([1.0, math.nan], {}, r"limits_kw must be finite and >= 0 .*limits_kw\[1\]=nan"),
        ([math.inf], {}, r"limits_kw must be finite and >= 0 .*limits_kw\[0\]=inf"),
        ([1.0, 2.0, -0.5], {}, r"limits_kw must be finite and >= 0 .*limits_kw\[2\]=-0.5"),
        ([1e300], {}, r"limits_kw\[0\] must convert to < 1e\+12 A"),
        ([1.0], {"dt_s": 0}, r"dt_s must be an integer >= 1 \[s\], got 0"),
        ([1.0], {"dt_s": -60}, r"dt_s must be an integer >= 1 \[s\], got -60"),
        ([1.0], {"dt_s": 900.0}, r"dt_s must be an integer >= 1 \[s\], got 900.0"),
        ([1.0], {"dt_s": True}, r"dt_s must be an integer >= 1 \[s\], got True"),
        ([1.0], {"number_phases": 0}, r"number_phases must be 1, 2 or 3, got 0"),
        ([1.0], {"number_phases": 4}, r"number_phases must be 1, 2 or 3, got 4"),
        ([1.0], {"max_periods": 0}, r"max_periods must be >= 1, got 0"),
        ([1.0], {"max_periods": -3}, r"max_periods must be >= 1, got -3"),
        ([1.0], {"max_periods": 2.5}, r"max_periods must be >= 1, got 2.5"),
        (
            [1.0],
            {"start": datetime(2025, 1, 1, 8, 0)},
            r"start must be a timezone-aware datetime, got naive",
        ),
        ([1.0], {"version": "2.0"}, r"version must be one of '1.6', '2.0.1', got '2.0'"),
        ([1.0], {"version": "1.5"}, r"version must be one of '1.6', '2.0.1', got '1.5'"),
        ([1.0], {"unit": "kW"}, r"unit must be one of 'A', 'W', got 'kW'"),
        ([1.0], {"unit": "a"}, r"unit must be one of 'A', 'W', got 'a'"),
        ([1.0], {"voltage_v": 0.0}, r"voltage_v must be finite and > 0 \[V\], got 0.0"),
        ([1.0], {"voltage_v": math.nan}, r"voltage_v must be finite and > 0 \[V\], got nan"),
        ([1.0], {"power_factor": 0.0}, r"power_factor must be in \(0, 1\], got 0.0"),
        ([1.0], {"power_factor": 1.1}, r"power_factor must be in \(0, 1\], got 1.1"),
        ([1.0], {"min_charging_rate": -1.0}, r"min_charging_rate must be finite, >= 0 .*got -1.0"),
        (
            [1.0],
            {"min_charging_rate": math.inf},
            r"min_charging_rate must be finite, >= 0 .*got inf",
        ),
        ([1.0], {"schedule_id": "7"}, r"schedule_id must be an integer, got '7'"),
    ],
)
def test_validation_errors(limits: Any, kwargs: dict[str, Any], match: str) -> None:
    kwargs.setdefault("dt_s", 900)
    with pytest.raises(ProblemError, match=match):
        charging_schedule(limits, **kwargs)


def test_problem_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="dt_s"):
        charging_schedule([1.0], dt_s=0)


def test_numpy_integers_are_accepted() -> None:
    schedule = charging_schedule(
        np.array([11.04, 7.36]),
        dt_s=np.int64(900),  # type: ignore[arg-type]
        number_phases=np.int32(3),  # type: ignore[arg-type]
        max_periods=np.int64(1),  # type: ignore[arg-type]
    )
    assert schedule["chargingSchedulePeriod"] == _periods((0, 10.6))
    assert type(schedule["duration"]) is int
    assert type(schedule["chargingSchedulePeriod"][0]["startPeriod"]) is int
    assert type(schedule["chargingSchedulePeriod"][0]["numberPhases"]) is int


# --- properties -----------------------------------------------------------------------------------


def _converted(limits_kw: list[float], unit: str, phases: int, voltage_v: float, pf: float) -> Any:
    if unit == "W":
        return np.asarray(limits_kw, dtype=np.float64) * 1000.0
    return a_from_kw(limits_kw, voltage_v=voltage_v, phases=phases, power_factor=pf)


def _round_down_reference(x: float) -> float:
    """Largest ``q / 10`` (float64) that is <= x, found by stepping."""
    q = math.floor(x * 10)
    while q / 10 > x:
        q -= 1
    while (q + 1) / 10 <= x:
        q += 1
    return q / 10


def _expand(schedule: dict[str, Any], n_steps: int, dt_s: int) -> list[float]:
    """Limit in force at the start of each step."""
    periods = schedule["chargingSchedulePeriod"]
    starts = [p["startPeriod"] for p in periods]
    out = []
    for k in range(n_steps):
        i = int(np.searchsorted(starts, k * dt_s, side="right")) - 1
        out.append(periods[i]["limit"])
    return out


@st.composite
def _problems(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=300))
    # Few distinct levels (plus noise) so that equal neighbours and merges actually happen.
    levels = draw(
        st.lists(
            st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False),
            min_size=1,
            max_size=8,
        )
    )
    limits = draw(
        st.lists(
            st.one_of(
                st.sampled_from(levels),
                st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False),
            ),
            min_size=n,
            max_size=n,
        )
    )
    return {
        "limits_kw": limits,
        "dt_s": draw(st.sampled_from([1, 60, 300, 900, 3600])),
        "unit": draw(st.sampled_from(["A", "W"])),
        "number_phases": draw(st.integers(min_value=1, max_value=3)),
        "voltage_v": draw(
            st.one_of(
                st.sampled_from([110.0, 120.0, 208.0, 230.0, 240.0, 400.0]),
                st.floats(min_value=90.0, max_value=480.0),
            )
        ),
        "power_factor": draw(st.floats(min_value=0.5, max_value=1.0)),
        "version": draw(st.sampled_from(["1.6", "2.0.1"])),
        "max_periods": draw(st.one_of(st.none(), st.integers(min_value=1, max_value=n + 5))),
    }


@settings(max_examples=200, deadline=None)
@given(_problems())
def test_schedule_properties(problem: dict[str, Any]) -> None:
    limits: list[float] = problem["limits_kw"]
    n, dt_s, max_periods = len(limits), problem["dt_s"], problem["max_periods"]
    schedule = charging_schedule(**problem)
    periods = schedule["chargingSchedulePeriod"]
    converted = _converted(
        limits,
        problem["unit"],
        problem["number_phases"],
        problem["voltage_v"],
        problem["power_factor"],
    )
    rounded = [_round_down_reference(float(x)) for x in converted]

    assert schedule["duration"] == n * dt_s
    assert ("id" in schedule) == (problem["version"] == "2.0.1")
    # (a) fits the station
    if max_periods is not None:
        assert 1 <= len(periods) <= max_periods
    # (b) start at 0, strictly increasing, inside the schedule, on the step grid
    starts = [p["startPeriod"] for p in periods]
    assert starts[0] == 0
    assert all(a < b for a, b in itertools.pairwise(starts))
    assert all(s < schedule["duration"] and s % dt_s == 0 for s in starts)
    assert all(p["numberPhases"] == problem["number_phases"] for p in periods)
    # neighbours always differ (no wasted periods)
    assert all(a["limit"] != b["limit"] for a, b in itertools.pairwise(periods))
    # (c) never above the plan, at any step
    expanded = _expand(schedule, n, dt_s)
    assert all(e <= x for e, x in zip(expanded, converted, strict=True))
    # each period's limit is the lowest rounded step limit it covers
    bounds = [*[s // dt_s for s in starts], n]
    for period, lo, hi in zip(periods, bounds, bounds[1:], strict=False):
        assert period["limit"] == min(rounded[lo:hi])
    # (d) without truncation, the expansion is the rounded plan, exactly; and truncation changes
    # nothing when the untruncated schedule already fits
    untruncated = charging_schedule(**{**problem, "max_periods": None})
    assert _expand(untruncated, n, dt_s) == rounded
    if max_periods is None or len(untruncated["chargingSchedulePeriod"]) <= max_periods:
        assert schedule == untruncated


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=50,
    )
)
def test_rounding_is_the_largest_tenth_not_above(limits_kw: list[float]) -> None:
    schedule = charging_schedule(limits_kw, dt_s=1, unit="W")
    converted = np.asarray(limits_kw, dtype=np.float64) * 1000.0
    for e, x in zip(_expand(schedule, len(limits_kw), 1), converted, strict=True):
        q = round(e * 10)
        assert q / 10 == e
        assert e <= x < (q + 1) / 10
