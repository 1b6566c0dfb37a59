"""Cut a charging session into OCPI 2.2.1 charging periods, exactly where tariff elements change.

:class:`SessionUsage` is what a session used (start, stop, meter readings, an optional
reservation). :func:`charging_pieces` and :func:`reservation_pieces` cut it into the pieces that
:func:`ampflow.engine.pricing.price_session` prices: one per combination of active tariff elements.

How the session is cut into periods
-----------------------------------
Time is counted in integer microseconds from the session start. Candidate split points are the
meter samples, local times of day named by the tariff (and local midnights) in the Location's
time zone -- both occurrences of a repeated wall time on a fall-back day, none of a wall time in a
spring-forward gap, plus the UTC-offset transitions themselves -- the moments the session's energy
crosses a ``min_kwh``/``max_kwh`` (interpolated linearly between meter values and rounded up to
the next microsecond), ``min_duration``/``max_duration``, and the start of parking. On each piece
the active element of every dimension is found (the first element, in tariff order, with a
component of that dimension whose restrictions all hold); neighbouring pieces with the same active
elements are merged into one period. Restrictions are read as the specification defines them:
``min_*`` inclusive, ``max_*`` exclusive, power and current instantaneous (a sample's value holds
until the next sample; without a power sample the meter interval's average power is used; a
missing current carries the last known one forward), energy and duration from the session start.

Charging and parking
--------------------
PARKING_TIME starts when energy transfer stops for good: at the end of the last meter interval
that moved energy (import or export above ``idle_power_kw``), or at ``charging_end`` when the
caller knows it (OCPP ``SuspendedEV``), plus ``idle_grace_s``. Pauses before that -- for example a
smart-charging pause the engine itself ordered -- are charging TIME, not parking.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ampflow.engine.errors import AmpflowError
from ampflow.engine.tariffs import (
    DayOfWeek,
    ReservationRestriction,
    Tariff,
    TariffDimension,
    TariffRestrictions,
)

__all__ = [
    "MeterSample",
    "PeriodKind",
    "PricingError",
    "Reservation",
    "SessionUsage",
    "zone",
]

_US = 1_000_000
_US_PER_H = Decimal(3_600_000_000)
_Q_KWH = Decimal("1e-9")
_ZERO = Decimal(0)
_DAYS = tuple(DayOfWeek)


class PricingError(AmpflowError):
    """A session's metered data or options cannot be priced (names field, value, expectation)."""


class PeriodKind(StrEnum):
    """What a charging period is: the EV charging, parked without charging, or a reservation."""

    CHARGING = "CHARGING"
    PARKING = "PARKING"
    RESERVATION = "RESERVATION"


def as_decimal(name: str, value: object, *, minimum: Decimal | None = None) -> Decimal:
    """``value`` (Decimal, int or str; never float) as a finite Decimal, or a PricingError."""
    if isinstance(value, float):
        raise PricingError(f"{name}: expected a Decimal, int or str (not float), got {value!r}")
    try:
        if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
            raise InvalidOperation
        number = Decimal(value)
    except InvalidOperation:
        raise PricingError(f"{name}: expected a number, got {value!r}") from None
    if not number.is_finite() or (minimum is not None and number < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise PricingError(f"{name}: expected a finite number{bound}, got {value!r}")
    return number


def _aware(name: str, value: object) -> datetime:
    """``value`` in UTC (so that arithmetic is in real time, never wall-clock time)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise PricingError(f"{name}: expected a tz-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def zone(time_zone: str) -> ZoneInfo:
    """The IANA time zone ``time_zone`` (a Location's ``time_zone``), or a clear error.

    Examples
    --------
    >>> zone("Europe/Amsterdam").key
    'Europe/Amsterdam'
    """
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise PricingError(
            f"time_zone: expected an IANA time zone such as 'Europe/Amsterdam', got {time_zone!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One meter reading of a session.

    Parameters
    ----------
    time : datetime
        Tz-aware timestamp.
    energy_kwh : Decimal
        Cumulative imported-energy register [kWh] (OCPP ``Energy.Active.Import.Register``).
    power_kw : Decimal, optional
        Instantaneous import power [kW]; holds until the next sample.
    current_a : Decimal, optional
        Instantaneous current summed over phases [A].
    export_kwh : Decimal, optional
        Cumulative exported-energy register [kWh], for V2G.

    Numbers may be given as ``Decimal``, ``int`` or ``str``; ``float`` is refused.
    """

    time: datetime
    energy_kwh: Decimal
    power_kw: Decimal | None = None
    current_a: Decimal | None = None
    export_kwh: Decimal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", _aware("MeterSample.time", self.time))
        object.__setattr__(
            self, "energy_kwh", as_decimal("MeterSample.energy_kwh", self.energy_kwh)
        )
        for name in ("power_kw", "current_a", "export_kwh"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(
                    self, name, as_decimal(f"MeterSample.{name}", value, minimum=_ZERO)
                )


@dataclass(frozen=True, slots=True)
class Reservation:
    """A reservation before the session: from ``start`` (made) to ``end`` (used or expired).

    For a reservation that was used, ``end`` is the session start. An ``expired`` reservation
    has no charging session: price it with ``SessionUsage(start=end, stop=end, meter=())``.
    """

    start: datetime
    end: datetime
    expired: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _aware("Reservation.start", self.start))
        object.__setattr__(self, "end", _aware("Reservation.end", self.end))
        if self.end <= self.start:
            raise PricingError(
                f"Reservation.end: expected a time after start ({self.start}), got {self.end}"
            )


@dataclass(frozen=True)
class SessionUsage:
    """What a session used: its start and stop and its meter readings.

    Parameters
    ----------
    start, stop : datetime
        Tz-aware session start and stop (plug-in to plug-out); ``stop > start``.
    meter : sequence of MeterSample
        Strictly increasing in time, covering ``[start, stop]`` (a sample at or before ``start``
        and one at or after ``stop``); registers never decrease.
    charging_end : datetime, optional
        When energy transfer stopped for good, if known; otherwise detected from the meter.
    reservation : Reservation, optional
    """

    start: datetime
    stop: datetime
    meter: tuple[MeterSample, ...]
    charging_end: datetime | None = None
    reservation: Reservation | None = None

    @classmethod
    def planned(
        cls,
        start: datetime,
        stop: datetime,
        energy_kwh: Decimal | int | str,
        *,
        charging_end: datetime | None = None,
    ) -> SessionUsage:
        """A session as planned (for a price preview): ``energy_kwh`` [kWh] delivered at constant
        power from ``start`` until ``charging_end`` (default ``stop``), then parked until ``stop``.

        Examples
        --------
        >>> from datetime import datetime, UTC
        >>> u = SessionUsage.planned(datetime(2026, 1, 1, 8, tzinfo=UTC),
        ...                          datetime(2026, 1, 1, 12, tzinfo=UTC), "20",
        ...                          charging_end=datetime(2026, 1, 1, 10, tzinfo=UTC))
        >>> [(s.time.hour, s.energy_kwh) for s in u.meter]
        [(8, Decimal('0')), (10, Decimal('20')), (12, Decimal('20'))]
        """
        energy = as_decimal("energy_kwh", energy_kwh, minimum=_ZERO)
        end = stop if charging_end is None else charging_end
        _aware("charging_end", end)
        if end == start and energy > 0:
            raise PricingError(
                f"energy_kwh: expected 0 for a session that never charges, got {energy_kwh!r}"
            )
        samples = [MeterSample(start, _ZERO)]
        if end > start:
            samples.append(MeterSample(end, energy))
        if stop > end:
            samples.append(MeterSample(stop, energy))
        return cls(start, stop, tuple(samples), charging_end=end)

    def __post_init__(self) -> None:
        start, stop = _aware("start", self.start), _aware("stop", self.stop)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)
        try:
            object.__setattr__(self, "meter", tuple(self.meter))
        except TypeError:
            raise PricingError(
                f"meter: expected a sequence of MeterSample, got {self.meter!r}"
            ) from None
        if self.reservation is not None and not isinstance(self.reservation, Reservation):
            raise PricingError(f"reservation: expected a Reservation, got {self.reservation!r}")
        if self.charging_end is not None:
            object.__setattr__(self, "charging_end", _aware("charging_end", self.charging_end))
        expired = self.reservation is not None and self.reservation.expired
        if expired:
            if stop != start or (self.reservation and self.reservation.end != start):
                raise PricingError(
                    "stop: an expired reservation has no session, expected "
                    f"start == stop == reservation.end, got start={start}, stop={stop}"
                )
            return
        if stop <= start:
            raise PricingError(f"stop: expected a time after start ({start}), got {stop}")
        _check_meter(self.meter, start, stop)
        if self.charging_end is not None and not start <= self.charging_end <= stop:
            raise PricingError(
                f"charging_end: expected a time in [start, stop], got {self.charging_end}"
            )
        if self.reservation is not None and self.reservation.end != start:
            raise PricingError(
                f"reservation.end: expected the session start {start}, got {self.reservation.end}"
            )


def _check_meter(meter: Sequence[MeterSample], start: datetime, stop: datetime) -> None:
    for i, sample in enumerate(meter):
        if not isinstance(sample, MeterSample):
            raise PricingError(f"meter[{i}]: expected a MeterSample, got {sample!r}")
    for i in range(1, len(meter)):
        prev, cur = meter[i - 1], meter[i]
        if cur.time <= prev.time:
            raise PricingError(f"meter[{i}].time: expected > {prev.time}, got {cur.time}")
        if cur.energy_kwh < prev.energy_kwh:
            raise PricingError(
                f"meter[{i}].energy_kwh: the register never decreases, expected >= "
                f"{prev.energy_kwh}, got {cur.energy_kwh}"
            )
        if (
            cur.export_kwh is not None
            and prev.export_kwh is not None
            and cur.export_kwh < prev.export_kwh
        ):
            raise PricingError(
                f"meter[{i}].export_kwh: the register never decreases, expected >= "
                f"{prev.export_kwh}, got {cur.export_kwh}"
            )

    if not meter or meter[0].time > start or meter[-1].time < stop:
        span = f"{meter[0].time}..{meter[-1].time}" if meter else "no samples"
        raise PricingError(
            f"meter: expected samples covering [{start}, {stop}] (a reading at or before the "
            f"start and one at or after the stop), got {span}"
        )


# --- the meter as piecewise-linear registers -----------------------------------------------------


class _Meter:
    """Registers interpolated linearly between samples; times in microseconds from ``t0``."""

    def __init__(self, meter: Sequence[MeterSample], t0: datetime) -> None:
        self.t = [us_between(s.time - t0) for s in meter]
        self.e = [s.energy_kwh for s in meter]
        self.x = [s.export_kwh for s in meter]
        self.p = [s.power_kw for s in meter]
        current: list[Decimal | None] = []
        last: Decimal | None = None
        for s in meter:
            last = s.current_a if s.current_a is not None else last
            current.append(last)
        self.c = current

    def index(self, t: int) -> int:
        """The meter interval ``[t[i], t[i+1])`` holding ``t``."""
        return min(max(bisect.bisect_right(self.t, t) - 1, 0), len(self.t) - 2)

    def energy_at(self, t: int) -> Decimal:
        i = self.index(t)
        t0, t1, e0, e1 = self.t[i], self.t[i + 1], self.e[i], self.e[i + 1]
        if t == t0 or e0 == e1:
            return e0
        if t == t1:
            return e1
        return (e0 + (e1 - e0) * (t - t0) / (t1 - t0)).quantize(_Q_KWH, ROUND_FLOOR)

    def power_at(self, t: int) -> Decimal:
        i = self.index(t)
        sampled = self.p[i]
        if sampled is not None:
            return sampled
        kwh = self.e[i + 1] - self.e[i]
        return (kwh * _US_PER_H / (self.t[i + 1] - self.t[i])).quantize(_Q_KWH)

    def current_at(self, t: int) -> Decimal | None:
        return self.c[self.index(t)]

    def moved_energy(self, i: int, idle_power_kw: Decimal) -> bool:
        hours = Decimal(self.t[i + 1] - self.t[i]) / _US_PER_H
        flows = [self.e[i + 1] - self.e[i]]
        x0, x1 = self.x[i], self.x[i + 1]
        if x0 is not None and x1 is not None:
            flows.append(x1 - x0)
        return any(f > 0 and f / hours > idle_power_kw for f in flows)

    def crossing(self, target: Decimal, end: int) -> int | None:
        """First microsecond in (0, end) at which the import register reaches ``target``."""
        if self.energy_at(0) >= target:
            return None
        i = next((k for k in range(len(self.e) - 1) if self.e[k + 1] >= target), None)
        if i is None:
            return None
        t0, t1, e0, e1 = self.t[i], self.t[i + 1], self.e[i], self.e[i + 1]
        exact = t0 + (target - e0) * (t1 - t0) / (e1 - e0)
        t = int(exact.to_integral_value(ROUND_CEILING))
        return t if 0 < t < end else None


def us_between(delta: timedelta) -> int:
    """The exact length of ``delta`` in microseconds."""
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


# --- local time -----------------------------------------------------------------------------------


def _local_breakpoints(tariff: Tariff, tz: ZoneInfo, t0: datetime, end: int) -> set[int]:
    """Instants in (0, end) where a local time of day named by the tariff (or midnight) occurs,
    and where the UTC offset changes."""
    walls = {time(0)}
    calendar = False
    for el in tariff.elements:
        r = el.restrictions
        if r is None:
            continue
        walls.update(w for w in (r.start_time, r.end_time) if w is not None)
        calendar |= bool(r.start_time or r.end_time or r.start_date or r.end_date or r.day_of_week)
    if not calendar:
        return set()
    t1 = t0 + timedelta(microseconds=end)
    out = _offset_changes(tz, t0, t1)
    day = t0.astimezone(tz).date() - timedelta(days=1)
    last = t1.astimezone(tz).date() + timedelta(days=1)
    while day <= last:
        for wall in walls:
            out.update(_wall_instants(tz, day, wall, t0))
        day += timedelta(days=1)
    return {t for t in out if 0 < t < end}


def _wall_instants(tz: ZoneInfo, day: date, wall: time, t0: datetime) -> set[int]:
    """Offsets from ``t0`` of every real instant showing ``day wall`` on the local clock."""
    naive = datetime.combine(day, wall)
    out = set()
    for fold in (0, 1):
        instant = naive.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == naive:  # not in a DST gap
            out.add(us_between(instant - t0))
    return out


def _offset_changes(tz: ZoneInfo, t0: datetime, t1: datetime) -> set[int]:
    """Offsets from ``t0`` of the UTC-offset transitions of ``tz`` in ``[t0, t1]``."""
    out: set[int] = set()
    step = timedelta(hours=6)
    a = t0
    while a < t1:
        b = min(a + step, t1)
        if a.astimezone(tz).utcoffset() != b.astimezone(tz).utcoffset():
            lo, hi = 0, int((b - a).total_seconds()) + 1  # offset(a + lo) != offset(a + hi)
            before = a.astimezone(tz).utcoffset()
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if (a + timedelta(seconds=mid)).astimezone(tz).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            out.add(us_between(a + timedelta(seconds=hi) - t0))
        a = b
    return out


# --- restrictions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _State:
    """Everything a restriction can look at, at the start of a piece of the session."""

    local: datetime
    elapsed_us: int
    energy_kwh: Decimal
    power_kw: Decimal
    current_a: Decimal | None


def _in_window(r: TariffRestrictions, wall: time) -> bool:
    start = r.start_time or time(0)
    end = r.end_time
    if end is None or end == time(0):  # "00:00" is the end of the day
        return wall >= start
    if end > start:
        return start <= wall < end
    return wall >= start or wall < end  # wraps past midnight


def _bounded(
    value: Decimal | int | None, lo: Decimal | int | None, hi: Decimal | int | None
) -> bool:
    if lo is None and hi is None:
        return True
    if value is None:
        return False  # the quantity is unknown: the restriction cannot be shown to hold
    return (lo is None or value >= lo) and (hi is None or value < hi)


def _matches(r: TariffRestrictions, s: _State) -> bool:
    day = s.local.date()
    us_lo = None if r.min_duration is None else r.min_duration * _US
    us_hi = None if r.max_duration is None else r.max_duration * _US
    return (
        ((r.start_time is None and r.end_time is None) or _in_window(r, s.local.time()))
        and (r.start_date is None or day >= r.start_date)
        and (r.end_date is None or day < r.end_date)
        and (not r.day_of_week or _DAYS[day.weekday()] in r.day_of_week)
        and _bounded(s.energy_kwh, r.min_kwh, r.max_kwh)
        and _bounded(s.power_kw, r.min_power, r.max_power)
        and _bounded(s.current_a, r.min_current, r.max_current)
        and _bounded(s.elapsed_us, us_lo, us_hi)
    )


def _active(
    tariff: Tariff,
    dimension: TariffDimension,
    state: _State,
    passes: Sequence[ReservationRestriction | None],
) -> int | None:
    """Index of the first element pricing ``dimension`` whose restrictions hold, per pass."""
    for wanted in passes:
        for i, el in enumerate(tariff.elements):
            r = el.restrictions
            kind = None if r is None else r.reservation
            if kind is wanted and el.component(dimension) and (r is None or _matches(r, state)):
                return i
    return None


# --- periods --------------------------------------------------------------------------------------


@dataclass
class Piece:
    """A stretch ``[start, end)`` [us from the session or reservation start] of one kind with the
    same active element (index) for every dimension; ``powers``/``currents`` are the values seen."""

    kind: PeriodKind
    start: int
    end: int
    energy_kwh: Decimal
    powers: list[Decimal]
    currents: list[Decimal | None]
    elements: dict[TariffDimension, int]


def _pieces(
    cuts: set[int],
    end: int,
    kind_at: Callable[[int], PeriodKind],
    state_at: Callable[[int], _State],
    energy_at: Callable[[int], Decimal],
    elements_at: Callable[[PeriodKind, _State], dict[TariffDimension, int]],
) -> list[Piece]:
    """Cut ``[0, end)`` at ``cuts`` and merge neighbours with the same kind and elements."""
    points = sorted({0, end} | {c for c in cuts if 0 < c < end})
    energies = [energy_at(p) for p in points]
    for k in range(1, len(energies)):  # guard the grid against an interpolation artefact
        energies[k] = max(energies[k], energies[k - 1])
    out: list[Piece] = []
    for k in range(len(points) - 1):
        a, b = points[k], points[k + 1]
        state, kind = state_at(a), kind_at(a)
        chosen = elements_at(kind, state)
        energy = energies[k + 1] - energies[k]
        prev = out[-1] if out else None
        if prev is not None and prev.kind is kind and prev.elements == chosen:
            prev.end = b
            prev.energy_kwh += energy
            prev.powers.append(state.power_kw)
            prev.currents.append(state.current_a)
        else:
            out.append(Piece(kind, a, b, energy, [state.power_kw], [state.current_a], chosen))
    return out


def charging_pieces(
    tariff: Tariff, usage: SessionUsage, tz: ZoneInfo, idle_grace_s: int, idle_power_kw: Decimal
) -> list[Piece]:
    """The charging and parking pieces of ``usage`` (which must have ``stop > start``).

    ``idle_grace_s`` [s] delays parking after energy transfer stops; a meter interval moves
    energy when its average import or export power exceeds ``idle_power_kw`` [kW].
    """
    t0 = usage.start
    end = us_between(usage.stop - t0)
    meter = _Meter(usage.meter, t0)
    if usage.charging_end is not None:
        charging_end = us_between(usage.charging_end - t0)
    else:
        moved = [
            i
            for i in range(len(meter.t) - 1)
            if meter.t[i] < end and meter.t[i + 1] > 0 and meter.moved_energy(i, idle_power_kw)
        ]
        charging_end = min(meter.t[moved[-1] + 1], end) if moved else 0
    parking_start = min(end, charging_end + idle_grace_s * _US)
    e0 = meter.energy_at(0)
    overrides: dict[int, Decimal] = {}
    cuts = set(meter.t) | {parking_start} | _local_breakpoints(tariff, tz, t0, end)
    for el in tariff.elements:
        r = el.restrictions
        if r is None:
            continue
        cuts.update(d * _US for d in (r.min_duration, r.max_duration) if d is not None)
        for kwh in (r.min_kwh, r.max_kwh):
            t = None if kwh is None else meter.crossing(e0 + kwh, end)
            if kwh is not None and t is not None:
                cuts.add(t)
                if t not in meter.t:
                    overrides[t] = e0 + kwh

    def state_at(t: int) -> _State:
        energy = overrides.get(t, meter.energy_at(t))
        local = (t0 + timedelta(microseconds=t)).astimezone(tz)
        return _State(local, t, energy - e0, meter.power_at(t), meter.current_at(t))

    def elements_at(kind: PeriodKind, state: _State) -> dict[TariffDimension, int]:
        time_dim = (
            TariffDimension.TIME if kind is PeriodKind.CHARGING else TariffDimension.PARKING_TIME
        )
        dims = (TariffDimension.ENERGY, time_dim, TariffDimension.FLAT)
        chosen = {d: _active(tariff, d, state, (None,)) for d in dims}
        return {d: i for d, i in chosen.items() if i is not None}

    return _pieces(
        cuts,
        end,
        lambda t: PeriodKind.CHARGING if t < parking_start else PeriodKind.PARKING,
        state_at,
        lambda t: overrides.get(t, meter.energy_at(t)),
        elements_at,
    )


def reservation_pieces(tariff: Tariff, reservation: Reservation, tz: ZoneInfo) -> list[Piece]:
    """The pieces of a reservation, priced by the elements restricted to reservations.

    A used reservation takes ``RESERVATION`` elements; an expired one takes, per dimension,
    the first ``RESERVATION_EXPIRES`` element and falls back to ``RESERVATION`` elements.
    """
    t0 = reservation.start
    end = us_between(reservation.end - t0)
    cuts = _local_breakpoints(tariff, tz, t0, end)
    for el in tariff.elements:
        r = el.restrictions
        if r is not None:
            cuts.update(d * _US for d in (r.min_duration, r.max_duration) if d is not None)
    passes: tuple[ReservationRestriction | None, ...] = (ReservationRestriction.RESERVATION,)
    if reservation.expired:  # the expiry element wins per dimension, RESERVATION is the fallback
        passes = (ReservationRestriction.RESERVATION_EXPIRES, *passes)

    def state_at(t: int) -> _State:
        local = (t0 + timedelta(microseconds=t)).astimezone(tz)
        return _State(local, t, _ZERO, _ZERO, None)

    def elements_at(kind: PeriodKind, state: _State) -> dict[TariffDimension, int]:
        dims = (TariffDimension.TIME, TariffDimension.FLAT)
        chosen = {d: _active(tariff, d, state, passes) for d in dims}
        return {d: i for d, i in chosen.items() if i is not None}

    return _pieces(
        cuts, end, lambda t: PeriodKind.RESERVATION, state_at, lambda t: _ZERO, elements_at
    )
