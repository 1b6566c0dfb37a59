"""OCPP charging schedules from planned connector limits.

The engine plans one power limit per time step for each connector [kW]. A station is told these
limits as an OCPP ``ChargingSchedule``: a list of periods, each with a start offset [s] and a
limit in A (per phase) or W (total), at most ``ChargingScheduleMaxPeriods`` (OCPP 1.6) or
``PeriodsPerSchedule`` (OCPP 2.0.1) of them. :func:`charging_schedule` builds that object as the
JSON dict a station expects (camelCase keys), for one connector.

Safety
------
The schedule never allows more than the plan, at any instant:

* each limit is rounded *down* to the 0.1 resolution of the OCPP schemas, and
* when the periods must be cut down to ``max_periods``, adjacent periods are merged into the
  *lower* of their two limits.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ampflow.engine.errors import ProblemError
from ampflow.engine.units import a_from_kw

__all__ = ["ChargingRateUnit", "OcppVersion", "charging_schedule"]

FloatArray = NDArray[np.float64]

# Above this value (in the rate unit) tenths are no longer exactly representable as integers in a
# float64 (2**53 / 10 ~ 9e14), so the round-down guarantee could not be kept. No connector comes
# anywhere near it (1e12 W is 1 TW).
_MAX_RATE = 1e12


class OcppVersion(StrEnum):
    """OCPP protocol version of the station."""

    V16 = "1.6"
    V201 = "2.0.1"


class ChargingRateUnit(StrEnum):
    """Unit of the limits in a charging schedule: A per phase, or W in total."""

    A = "A"
    W = "W"


def charging_schedule(
    limits_kw: ArrayLike,
    *,
    dt_s: int,
    start: datetime | None = None,
    version: OcppVersion | str = OcppVersion.V16,
    unit: ChargingRateUnit | str = ChargingRateUnit.A,
    number_phases: int = 3,
    voltage_v: float = 230.0,
    power_factor: float = 1.0,
    max_periods: int | None = None,
    min_charging_rate: float | None = None,
    schedule_id: int = 1,
    include_number_phases: bool = True,
) -> dict[str, Any]:
    """OCPP ``ChargingSchedule`` for one connector's planned limits.

    Each step's limit is converted to ``unit`` and rounded down to a multiple of 0.1; consecutive
    steps with the same rounded limit form one period. If there are more than ``max_periods``
    periods, adjacent periods are merged, each time the pair whose merge loses the least energy,
    into the lower of their two limits, until they fit. The emitted limit is therefore never above
    the planned limit at any step.

    Parameters
    ----------
    limits_kw : array_like, shape (n_steps,)
        Planned limit of each step [kW]; finite and >= 0.
    dt_s : int
        Length of a step [s]; > 0.
    start : datetime, optional
        Start of the first step; must be timezone-aware. Emitted as ``startSchedule`` in UTC
        (RFC 3339, ``Z`` suffix, microseconds truncated). Omitted when not given (relative
        schedule).
    version : OcppVersion or {'1.6', '2.0.1'}, default '1.6'
        OCPP version of the station. 2.0.1 adds the schedule ``id``.
    unit : ChargingRateUnit or {'A', 'W'}, default 'A'
        Unit of the emitted limits: current per phase [A] or total power [W].
    number_phases : int, default 3
        Number of phases the connector and EV use (1, 2 or 3). For ``unit='A'`` the limit is the
        current on each of them.
    voltage_v : float, default 230
        Voltage for the A conversion [V]: line-to-neutral, or line-to-line for a single-phase
        charger connected between two lines.
    power_factor : float, default 1
        Power factor for the A conversion, in (0, 1].
    max_periods : int, optional
        Largest number of periods the station accepts (``ChargingScheduleMaxPeriods`` in 1.6,
        ``PeriodsPerSchedule`` in 2.0.1); >= 1. No limit when not given.
    min_charging_rate : float, optional
        Minimum charging rate the EV supports, in ``unit`` [A or W]; finite and >= 0. Rounded down
        to a multiple of 0.1 and emitted as ``minChargingRate``. Omitted when not given.
    schedule_id : int, default 1
        ``id`` of the schedule (OCPP 2.0.1 only, where it is required).
    include_number_phases : bool, default True
        Emit ``numberPhases`` in every period. Some stations reject or ignore it.

    Returns
    -------
    dict
        The ``ChargingSchedule`` object: ``chargingRateUnit``, ``chargingSchedulePeriod`` (list of
        ``{"startPeriod": int [s], "limit": float, "numberPhases": int}``), ``duration`` (int,
        ``n_steps * dt_s`` [s]), and, when applicable, ``startSchedule``, ``minChargingRate`` and
        (2.0.1) ``id``.

    Raises
    ------
    ProblemError
        If an argument is out of range: ``limits_kw`` not 1-D, empty, non-finite or negative;
        ``dt_s <= 0``; ``number_phases`` not in 1..3; ``max_periods < 1``; ``start`` naive; or an
        unknown ``version`` or ``unit``.

    Notes
    -----
    Rounding works in integer tenths: the emitted limit is ``q / 10`` for the largest integer
    ``q`` with ``q / 10 <= x`` (evaluated in float64), where ``x`` is the step's limit in ``unit``.

    Merging two adjacent periods loses ``(higher - lower) * duration of the higher`` of energy (in
    unit-seconds); ties go to the earliest pair. After the merging, neighbours that ended up with
    equal limits are joined, which only removes periods.

    Examples
    --------
    Three 15-minute steps at 230 V, three phases: 11.04 kW is 16 A per phase, 7.36 kW is
    10.67 A, rounded down to 10.6 A.

    >>> from datetime import datetime, timedelta, timezone
    >>> charging_schedule([11.04, 11.04, 7.36], dt_s=900)
    {'chargingRateUnit': 'A',
     'chargingSchedulePeriod': [{'startPeriod': 0, 'limit': 16.0, 'numberPhases': 3},
                                {'startPeriod': 1800, 'limit': 10.6, 'numberPhases': 3}],
     'duration': 2700}

    OCPP 2.0.1, in W, with an absolute start, and at most one period (the lower limit wins):

    >>> cet = timezone(timedelta(hours=1))
    >>> charging_schedule([11.04, 11.04, 7.36], dt_s=900, version="2.0.1", unit="W",
    ...                   start=datetime(2025, 1, 1, 8, 0, tzinfo=cet), max_periods=1,
    ...                   include_number_phases=False, schedule_id=7)
    {'id': 7, 'chargingRateUnit': 'W',
     'chargingSchedulePeriod': [{'startPeriod': 0, 'limit': 7360.0}],
     'duration': 2700, 'startSchedule': '2025-01-01T07:00:00Z'}
    """
    limits = _as_limits(limits_kw)
    dt = _as_int("dt_s", dt_s, minimum=1, expected="an integer >= 1 [s]")
    ver = _as_enum("version", version, OcppVersion)
    rate_unit = _as_enum("unit", unit, ChargingRateUnit)
    phases = _as_int("number_phases", number_phases, minimum=1, expected="1, 2 or 3")
    if phases > 3:
        raise ProblemError(f"number_phases must be 1, 2 or 3, got {number_phases!r}")
    if not (math.isfinite(voltage_v) and voltage_v > 0):
        raise ProblemError(f"voltage_v must be finite and > 0 [V], got {voltage_v!r}")
    if not (power_factor > 0 and power_factor <= 1):
        raise ProblemError(f"power_factor must be in (0, 1], got {power_factor!r}")
    n_max = None
    if max_periods is not None:
        n_max = _as_int("max_periods", max_periods, minimum=1, expected=">= 1")
    sid = _as_int("schedule_id", schedule_id, minimum=None, expected="an integer")
    start_text = None if start is None else _format_start(start)
    min_rate = None
    if min_charging_rate is not None:
        min_rate = float(min_charging_rate)
        if not (math.isfinite(min_rate) and 0 <= min_rate < _MAX_RATE):
            raise ProblemError(
                f"min_charging_rate must be finite, >= 0 and < {_MAX_RATE:g} [{rate_unit}], "
                f"got {min_charging_rate!r}"
            )

    if rate_unit is ChargingRateUnit.W:
        values = limits * 1000.0
    else:
        values = a_from_kw(limits, voltage_v=voltage_v, phases=phases, power_factor=power_factor)
    if not np.all(values < _MAX_RATE):
        i = int(np.argmax(~(values < _MAX_RATE)))
        raise ProblemError(
            f"limits_kw[{i}] must convert to < {_MAX_RATE:g} {rate_unit}, "
            f"got {float(limits[i])!r} kW = {float(values[i])!r} {rate_unit}"
        )
    tenths = _floor_tenths(values)

    periods = _merge_equal(_runs([int(q) for q in tenths]))
    if n_max is not None:
        periods = _merge_equal(_truncate(periods, n_max))

    schedule: dict[str, Any] = {}
    if ver is OcppVersion.V201:
        schedule["id"] = sid
    schedule["chargingRateUnit"] = str(rate_unit)
    schedule["chargingSchedulePeriod"] = [
        _period(first * dt, q, phases if include_number_phases else None) for first, _, q in periods
    ]
    schedule["duration"] = int(limits.size) * dt
    if start_text is not None:
        schedule["startSchedule"] = start_text
    if min_rate is not None:
        schedule["minChargingRate"] = float(_floor_tenths(np.array([min_rate]))[0]) / 10.0
    return schedule


# A period while building: (first step, number of steps, limit in integer tenths of the unit).
_Period = tuple[int, int, int]


def _floor_tenths(x: FloatArray) -> NDArray[np.int64]:
    """Largest integers ``q`` with ``q / 10 <= x`` in float64 arithmetic, for ``0 <= x < 1e12``."""
    q = np.floor(x * 10.0)
    # x * 10 is rounded, so its floor is one too high when x is just below a tenth (x * 10 rounds
    # up to the integer). The second correction, raising q when (q + 1) / 10 <= x, is a safeguard
    # for the opposite rounding; together they give the largest q with q / 10 <= x.
    q = np.where(q / 10.0 > x, q - 1.0, q)
    q = np.where((q + 1.0) / 10.0 <= x, q + 1.0, q)
    return q.astype(np.int64)


def _runs(tenths: list[int]) -> list[_Period]:
    """One period per step."""
    return [(k, 1, q) for k, q in enumerate(tenths)]


def _merge_equal(periods: list[_Period]) -> list[_Period]:
    """Join consecutive periods with equal limits."""
    out: list[_Period] = []
    for first, steps, q in periods:
        if out and out[-1][2] == q:
            prev_first, prev_steps, _ = out[-1]
            out[-1] = (prev_first, prev_steps + steps, q)
        else:
            out.append((first, steps, q))
    return out


def _truncate(periods: list[_Period], n_max: int) -> list[_Period]:
    """Merge adjacent periods into the lower limit, least energy lost first, until <= n_max."""
    periods = list(periods)
    while len(periods) > n_max:
        best = 0
        best_loss = -1
        for i in range(len(periods) - 1):
            _, steps_a, q_a = periods[i]
            _, steps_b, q_b = periods[i + 1]
            loss = (q_a - q_b) * steps_a if q_a >= q_b else (q_b - q_a) * steps_b
            if best_loss < 0 or loss < best_loss:  # strict: ties keep the earliest pair
                best, best_loss = i, loss
        first, steps_a, q_a = periods[best]
        _, steps_b, q_b = periods[best + 1]
        periods[best : best + 2] = [(first, steps_a + steps_b, min(q_a, q_b))]
    return periods


def _period(start_period_s: int, tenths: int, phases: int | None) -> dict[str, Any]:
    period: dict[str, Any] = {"startPeriod": start_period_s, "limit": tenths / 10.0}
    if phases is not None:
        period["numberPhases"] = phases
    return period


def _as_limits(limits_kw: ArrayLike) -> FloatArray:
    try:
        limits = np.asarray(limits_kw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProblemError(
            f"limits_kw must be an array of numbers [kW], got {limits_kw!r}"
        ) from exc
    if limits.ndim != 1 or limits.size == 0:
        raise ProblemError(
            f"limits_kw must be a non-empty 1-D array [kW], got shape {limits.shape}"
        )
    bad = ~np.isfinite(limits) | (limits < 0)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ProblemError(
            f"limits_kw must be finite and >= 0 [kW], got limits_kw[{i}]={float(limits[i])!r}"
        )
    return limits


def _as_int(name: str, value: object, *, minimum: int | None, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ProblemError(f"{name} must be {expected}, got {value!r}")
    n = int(value)
    if minimum is not None and n < minimum:
        raise ProblemError(f"{name} must be {expected}, got {n!r}")
    return n


def _as_enum[E: StrEnum](name: str, value: str, enum: type[E]) -> E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(str(m)) for m in enum)
        raise ProblemError(f"{name} must be one of {allowed}, got {value!r}") from None


def _format_start(start: datetime) -> str:
    if start.tzinfo is None or start.utcoffset() is None:
        raise ProblemError(f"start must be a timezone-aware datetime, got naive {start!r}")
    utc = start.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    return utc.isoformat(timespec="seconds") + "Z"
