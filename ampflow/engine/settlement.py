"""V2G settlement: what the utility pays the site for exported energy, and what the driver gets.

An OCPI CDR carries only the energy a driver imported (and pays for); exported energy is settled
here, exactly, with ``Decimal``. Per V2G session (:class:`V2gSession`, metered export and import
per interval from the EVSE meter, see :func:`metered_intervals`):

* **export energy** -- every kWh exported is valued at the site's export price of its interval
  (:class:`PriceInterval`), the utility paying the site;
* **DR events** -- every kWh discharged during a :class:`DrEvent` earns the event's payment per kWh
  (on top of the export price, or instead of it with ``V2gProgram.dr_excludes_export``);
* **capacity** -- a session committed to ``committed_kw`` earns ``capacity_payment_per_kw`` for
  every event it was plugged in for;
* **degradation** -- the site pays the driver ``degradation_per_kwh`` for every kWh discharged
  (the V2G throughput of the battery);
* **driver share** -- the site pays the driver ``driver_share`` of the margin (grid payments
  minus degradation), never less than zero: a driver never pays for a V2G session;
* **missed target** -- if the net energy delivered falls short of ``target_kwh``, the site pays the
  driver ``missed_target_per_kwh`` per kWh short.

Every line is a transfer from a payer to a payee, so the utility's, site's and driver's nets sum
to zero, and the site's and driver's nets sum to the grid payment. Statements reconcile: the
metered export equals the settled export. :func:`driver_statements` and :func:`site_statements`
(in :mod:`ampflow.engine.v2g_statements`) roll sessions up per driver-month and per site-month
(site against utility).

:func:`scheduler_prices` gives the horizon scheduler the same per-kWh money: the value of a kWh
discharged in each step (export price plus DR payment, as settled) and the degradation cost.
Amounts are exact (kWh split between intervals are cut at 1e-9 kWh, the remainder kept in the
last piece so that no energy is lost); round them to the currency when paying out.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Any

import numpy as np

from ampflow.engine.errors import AmpflowError
from ampflow.engine.periods import MeterSample, as_decimal, us_between

__all__ = [
    "DrEvent",
    "LineKind",
    "MeteredInterval",
    "Party",
    "PriceInterval",
    "SchedulerPrices",
    "SessionStatement",
    "SettlementError",
    "SettlementLine",
    "V2gProgram",
    "V2gSession",
    "metered_intervals",
    "scheduler_prices",
    "settle_session",
]

_ZERO = Decimal(0)
_Q_KWH = Decimal("1e-9")
_PREC = 60


class SettlementError(AmpflowError):
    """Settlement input is inconsistent (names the field, its value and what was expected)."""


class Party(StrEnum):
    """Who pays or is paid."""

    UTILITY = "utility"
    SITE = "site"
    DRIVER = "driver"


class LineKind(StrEnum):
    """What a settlement line pays for."""

    EXPORT_ENERGY = "export_energy"  # utility -> site, per kWh exported
    DR_EVENT = "dr_event"  # utility -> site, per kWh discharged during the event
    CAPACITY = "capacity"  # utility -> site, per kW committed, per event
    DEGRADATION = "degradation"  # site -> driver, per kWh discharged
    DRIVER_SHARE = "driver_share"  # site -> driver, a share of the margin
    MISSED_TARGET = "missed_target"  # site -> driver, per kWh short of the departure target


_PAYER = {
    LineKind.EXPORT_ENERGY: (Party.UTILITY, Party.SITE),
    LineKind.DR_EVENT: (Party.UTILITY, Party.SITE),
    LineKind.CAPACITY: (Party.UTILITY, Party.SITE),
    LineKind.DEGRADATION: (Party.SITE, Party.DRIVER),
    LineKind.DRIVER_SHARE: (Party.SITE, Party.DRIVER),
    LineKind.MISSED_TARGET: (Party.SITE, Party.DRIVER),
}


def _utc(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise SettlementError(f"{name}: expected a tz-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _window(obj: object, owner: str) -> None:
    start = _utc(f"{owner}.start", getattr(obj, "start"))  # noqa: B009
    end = _utc(f"{owner}.end", getattr(obj, "end"))  # noqa: B009
    if end <= start:
        raise SettlementError(f"{owner}.end: expected a time after start ({start}), got {end}")
    _set(obj, "start", start)
    _set(obj, "end", end)


def _amount(owner: str, obj: object, *names: str) -> None:
    for name in names:
        _set(obj, name, _as_decimal(f"{owner}.{name}", getattr(obj, name)))


def _as_decimal(name: str, value: object) -> Decimal:
    try:
        return as_decimal(name, value, minimum=_ZERO)
    except AmpflowError as err:
        raise SettlementError(str(err)) from None


@dataclass(frozen=True, slots=True)
class PriceInterval:
    """The site's export price over ``[start, end)`` [currency/kWh]."""

    start: datetime
    end: datetime
    price_per_kwh: Decimal

    def __post_init__(self) -> None:
        _window(self, "PriceInterval")
        _amount("PriceInterval", self, "price_per_kwh")


@dataclass(frozen=True, slots=True)
class DrEvent:
    """A demand-response event over ``[start, end)``.

    Parameters
    ----------
    event_id : str
    start, end : datetime
    payment_per_kwh : Decimal
        Paid per kWh discharged during the event [currency/kWh].
    capacity_payment_per_kw : Decimal, default 0
        Paid per kW a session committed, per event it was plugged in for [currency/kW].
    """

    event_id: str
    start: datetime
    end: datetime
    payment_per_kwh: Decimal
    capacity_payment_per_kw: Decimal = _ZERO

    def __post_init__(self) -> None:
        _window(self, f"DrEvent {self.event_id!r}")
        _amount("DrEvent", self, "payment_per_kwh", "capacity_payment_per_kw")


@dataclass(frozen=True, slots=True)
class V2gProgram:
    """How V2G money is shared.

    Parameters
    ----------
    currency : str
    degradation_per_kwh : Decimal
        Paid to the driver per kWh discharged [currency/kWh].
    driver_share : Decimal
        Fraction of the margin (grid payments minus degradation) paid to the driver, in [0, 1].
    missed_target_per_kwh : Decimal
        Paid to the driver per kWh short of the departure target [currency/kWh].
    dr_excludes_export : bool, default False
        A kWh discharged during a DR event earns the event payment instead of the export price
        (programs that forbid double counting) rather than on top of it.
    """

    currency: str
    degradation_per_kwh: Decimal
    driver_share: Decimal
    missed_target_per_kwh: Decimal
    dr_excludes_export: bool = False

    def __post_init__(self) -> None:
        _amount("V2gProgram", self, "degradation_per_kwh", "driver_share", "missed_target_per_kwh")
        if self.driver_share > 1:
            raise SettlementError(
                f"V2gProgram.driver_share: expected a fraction in [0, 1], got {self.driver_share}"
            )
        if not isinstance(self.currency, str) or len(self.currency) != 3:
            raise SettlementError(
                f"V2gProgram.currency: expected an ISO 4217 code, got {self.currency!r}"
            )


@dataclass(frozen=True, slots=True)
class MeteredInterval:
    """Energy through the EVSE meter over ``[start, end)`` [kWh], each direction >= 0."""

    start: datetime
    end: datetime
    import_kwh: Decimal
    export_kwh: Decimal

    def __post_init__(self) -> None:
        _window(self, "MeteredInterval")
        _amount("MeteredInterval", self, "import_kwh", "export_kwh")


@dataclass(frozen=True)
class V2gSession:
    """A V2G session to settle.

    Parameters
    ----------
    session_id, driver_id, site_id : str
    intervals : sequence of MeteredInterval
        In time order, not overlapping; the session is plugged in from the first start to the
        last end.
    committed_kw : Decimal, default 0
        Discharge capacity the session committed to DR events [kW].
    target_kwh : Decimal, optional
        Net energy (import minus export) promised by departure [kWh].
    """

    session_id: str
    driver_id: str
    site_id: str
    intervals: tuple[MeteredInterval, ...]
    committed_kw: Decimal = _ZERO
    target_kwh: Decimal | None = None

    def __post_init__(self) -> None:
        intervals = tuple(self.intervals)
        if not intervals or not all(isinstance(i, MeteredInterval) for i in intervals):
            raise SettlementError(
                f"V2gSession {self.session_id!r}.intervals: expected one or more MeteredInterval"
            )
        for k in range(1, len(intervals)):
            if intervals[k].start < intervals[k - 1].end:
                raise SettlementError(
                    f"V2gSession {self.session_id!r}.intervals[{k}].start: expected >= "
                    f"{intervals[k - 1].end} (in order, not overlapping), got {intervals[k].start}"
                )
        _set(self, "intervals", intervals)
        _amount("V2gSession", self, "committed_kw")
        if self.target_kwh is not None:
            _set(self, "target_kwh", as_decimal("V2gSession.target_kwh", self.target_kwh))

    @property
    def start(self) -> datetime:
        return self.intervals[0].start

    @property
    def end(self) -> datetime:
        return self.intervals[-1].end


@dataclass(frozen=True, slots=True)
class SettlementLine:
    """A transfer of ``amount`` [currency] from ``payer`` to ``payee``.

    ``quantity`` is in ``unit`` (kWh, kW, or the currency for a share) and ``rate`` is per unit
    (the share fraction for ``DRIVER_SHARE``); ``reference`` names the price interval or event.
    """

    kind: LineKind
    payer: Party
    payee: Party
    quantity: Decimal
    unit: str
    rate: Decimal
    amount: Decimal
    start: datetime | None = None
    end: datetime | None = None
    reference: str | None = None

    def net(self, party: Party) -> Decimal:
        """What this line does to ``party``'s balance [currency]."""
        if party is self.payee:
            return self.amount
        return -self.amount if party is self.payer else _ZERO

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "payer": self.payer.value,
            "payee": self.payee.value,
            "quantity": self.quantity,
            "unit": self.unit,
            "rate": self.rate,
            "amount": self.amount,
            "start": None if self.start is None else _iso(self.start),
            "end": None if self.end is None else _iso(self.end),
            "reference": self.reference,
        }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _line(
    kind: LineKind,
    quantity: Decimal,
    unit: str,
    rate: Decimal,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    reference: str | None = None,
) -> SettlementLine:
    payer, payee = _PAYER[kind]
    return SettlementLine(
        kind, payer, payee, quantity, unit, rate, quantity * rate, start, end, reference
    )


@dataclass(frozen=True)
class SessionStatement:
    """The settlement of one V2G session.

    Attributes
    ----------
    session_id, driver_id, site_id, currency : str
    start, end : datetime
    lines : tuple of SettlementLine
    metered_export_kwh, settled_export_kwh : Decimal
        What the meter says was exported and what the lines settled; always equal.
    import_kwh, delivered_kwh : Decimal
        Imported, and net (import minus export) [kWh].
    shortfall_kwh : Decimal
        Short of the departure target (0 without a target) [kWh].
    """

    session_id: str
    driver_id: str
    site_id: str
    currency: str
    start: datetime
    end: datetime
    lines: tuple[SettlementLine, ...]
    metered_export_kwh: Decimal
    settled_export_kwh: Decimal
    import_kwh: Decimal
    delivered_kwh: Decimal
    shortfall_kwh: Decimal

    def net(self, party: Party) -> Decimal:
        """``party``'s balance from this session [currency]; positive means it receives."""
        return sum((ln.net(party) for ln in self.lines), _ZERO)

    @property
    def grid_payment(self) -> Decimal:
        """What the utility pays for this session [currency]."""
        return -self.net(Party.UTILITY)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (numbers are ``Decimal``)."""
        return {
            "session_id": self.session_id,
            "driver_id": self.driver_id,
            "site_id": self.site_id,
            "currency": self.currency,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "metered_export_kwh": self.metered_export_kwh,
            "settled_export_kwh": self.settled_export_kwh,
            "import_kwh": self.import_kwh,
            "delivered_kwh": self.delivered_kwh,
            "shortfall_kwh": self.shortfall_kwh,
            "grid_payment": self.grid_payment,
            "net": {p.value: self.net(p) for p in Party},
            "lines": [ln.to_dict() for ln in self.lines],
        }


# --- metering -------------------------------------------------------------------------------------


def metered_intervals(
    samples: Sequence[MeterSample], *, start: datetime, end: datetime, interval_s: int
) -> tuple[MeteredInterval, ...]:
    """Import and export per interval of ``interval_s`` from ``start`` (the last may be shorter),
    interpolating the cumulative registers linearly between meter samples.

    Samples must cover ``[start, end]``, in time order, with registers that never decrease; a
    sample without ``export_kwh`` is allowed only if none has one (no export).

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> s = [MeterSample(t, Decimal(0), export_kwh=Decimal(0)),
    ...      MeterSample(t.replace(hour=1), Decimal(2), export_kwh=Decimal(6))]
    >>> [(str(i.import_kwh), str(i.export_kwh)) for i in metered_intervals(
    ...     s, start=t, end=t.replace(hour=1), interval_s=1800)]
    [('1.000000000', '3.000000000'), ('1.000000000', '3.000000000')]
    """
    start, end = _utc("start", start), _utc("end", end)
    if isinstance(interval_s, bool) or not isinstance(interval_s, int) or interval_s <= 0:
        raise SettlementError(f"interval_s: expected an integer > 0, got {interval_s!r}")
    if end <= start:
        raise SettlementError(f"end: expected a time after start ({start}), got {end}")
    samples = list(samples)
    missing = [s.export_kwh is None for s in samples]
    if any(missing) and not all(missing):
        k = missing.index(True)
        raise SettlementError(f"samples[{k}].export_kwh: expected a value (other samples have one)")
    for k in range(1, len(samples)):
        if samples[k].time <= samples[k - 1].time:
            raise SettlementError(f"samples[{k}].time: expected > {samples[k - 1].time}")
        for name in ("energy_kwh", "export_kwh"):
            a, b = getattr(samples[k - 1], name), getattr(samples[k], name)
            if a is not None and b < a:
                raise SettlementError(
                    f"samples[{k}].{name}: the register never decreases, got {b} < {a}"
                )
    if not samples or samples[0].time > start or samples[-1].time < end:
        raise SettlementError(f"samples: expected readings covering [{start}, {end}]")
    times = [s.time for s in samples]
    imports = [s.energy_kwh for s in samples]
    exports = [s.export_kwh or _ZERO for s in samples]
    edges = [start]
    while edges[-1] < end:
        edges.append(min(edges[-1] + timedelta(seconds=interval_s), end))
    with localcontext() as ctx:
        ctx.prec = _PREC
        imp = [_interpolate(times, imports, t) for t in edges]
        exp = [_interpolate(times, exports, t) for t in edges]
        return tuple(
            MeteredInterval(edges[k], edges[k + 1], imp[k + 1] - imp[k], exp[k + 1] - exp[k])
            for k in range(len(edges) - 1)
        )


def _interpolate(times: Sequence[datetime], values: Sequence[Decimal], t: datetime) -> Decimal:
    k = max(i for i, ti in enumerate(times) if ti <= t)
    if times[k] == t or k == len(times) - 1:
        return values[k]
    span = us_between(times[k + 1] - times[k])
    part = us_between(t - times[k])
    return values[k] + ((values[k + 1] - values[k]) * part / span).quantize(_Q_KWH, "ROUND_FLOOR")


# --- one session ----------------------------------------------------------------------------------


def _check_sorted(items: Sequence[PriceInterval] | Sequence[DrEvent], name: str) -> None:
    for k in range(1, len(items)):
        if items[k].start < items[k - 1].end:
            raise SettlementError(
                f"{name}[{k}].start: expected >= {items[k - 1].end} (in order, not overlapping), "
                f"got {items[k].start}"
            )


def _cuts(prices: Sequence[PriceInterval], events: Sequence[DrEvent]) -> list[datetime]:
    return [t for p in prices for t in (p.start, p.end)] + [
        t for e in events for t in (e.start, e.end)
    ]


def _fine(amount: Decimal) -> Decimal:
    """At most 12 decimals (a repeating fraction is cut there)."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -12:
        return amount.quantize(Decimal("1e-12"))
    return amount


class _Lookup:
    """Finds the item (price interval or event; sorted, not overlapping) holding an instant."""

    def __init__(self, items: Sequence[PriceInterval] | Sequence[DrEvent]) -> None:
        self.starts = [it.start for it in items]
        self.ends = [it.end for it in items]

    def __call__(self, a: datetime) -> int | None:
        k = bisect.bisect_right(self.starts, a) - 1
        return k if k >= 0 and a < self.ends[k] else None


def _split(
    interval: MeteredInterval, cuts: Iterable[datetime]
) -> list[tuple[datetime, datetime, Decimal]]:
    """The interval's export split pro rata at ``cuts``; the pieces sum exactly to the whole."""
    points = sorted(
        {interval.start, interval.end} | {c for c in cuts if interval.start < c < interval.end}
    )
    total_us = us_between(interval.end - interval.start)
    pieces = []
    given = _ZERO
    for a, b in itertools.pairwise(points):
        if b == interval.end:
            kwh = interval.export_kwh - given
        else:
            share = interval.export_kwh * us_between(b - a) / total_us
            kwh = share.quantize(_Q_KWH, "ROUND_FLOOR")
            given += kwh
        pieces.append((a, b, kwh))
    return pieces


def _energy_lines(
    session: V2gSession,
    program: V2gProgram,
    prices: Sequence[PriceInterval],
    events: Sequence[DrEvent],
) -> list[SettlementLine]:
    by_price: dict[int, Decimal] = defaultdict(Decimal)
    by_event: dict[int, Decimal] = defaultdict(Decimal)
    cuts = _cuts(prices, events)
    price_at, event_at = _Lookup(prices), _Lookup(events)
    for interval in session.intervals:
        if interval.export_kwh == 0:
            continue
        for a, b, kwh in _split(interval, cuts):
            event = event_at(a)
            if event is not None:
                by_event[event] += kwh
                if program.dr_excludes_export:
                    continue
            price = price_at(a)
            if price is None:
                raise SettlementError(
                    f"export_prices: expected a price covering {a}..{b}, when session "
                    f"{session.session_id!r} exported {kwh} kWh"
                )
            by_price[price] += kwh
    lines = [
        _line(
            LineKind.EXPORT_ENERGY,
            kwh,
            "kWh",
            prices[k].price_per_kwh,
            start=prices[k].start,
            end=prices[k].end,
        )
        for k, kwh in sorted(by_price.items())
        if kwh > 0
    ]
    lines += [
        _line(
            LineKind.DR_EVENT,
            kwh,
            "kWh",
            events[k].payment_per_kwh,
            start=events[k].start,
            end=events[k].end,
            reference=events[k].event_id,
        )
        for k, kwh in sorted(by_event.items())
        if kwh > 0
    ]
    return lines


def _capacity_lines(session: V2gSession, events: Sequence[DrEvent]) -> list[SettlementLine]:
    """Committed kW paid for every event the session was plugged in for."""
    return [
        _line(
            LineKind.CAPACITY,
            session.committed_kw,
            "kW",
            e.capacity_payment_per_kw,
            start=e.start,
            end=e.end,
            reference=e.event_id,
        )
        for e in events
        if e.start < session.end
        and session.start < e.end
        and session.committed_kw > 0
        and e.capacity_payment_per_kw > 0
    ]


def _driver_lines(
    program: V2gProgram, grid_lines: Sequence[SettlementLine], exported: Decimal, shortfall: Decimal
) -> list[SettlementLine]:
    """What the site pays the driver: degradation, the share of the margin, missed target."""
    out = []
    if exported > 0 and program.degradation_per_kwh > 0:
        out.append(_line(LineKind.DEGRADATION, exported, "kWh", program.degradation_per_kwh))
    grid = sum((ln.amount for ln in grid_lines), _ZERO)
    margin = grid - exported * program.degradation_per_kwh
    if margin > 0 and program.driver_share > 0:
        out.append(_line(LineKind.DRIVER_SHARE, margin, program.currency, program.driver_share))
    if shortfall > 0 and program.missed_target_per_kwh > 0:
        out.append(_line(LineKind.MISSED_TARGET, shortfall, "kWh", program.missed_target_per_kwh))
    return out


def settle_session(
    session: V2gSession,
    *,
    program: V2gProgram,
    export_prices: Sequence[PriceInterval],
    events: Sequence[DrEvent] = (),
) -> SessionStatement:
    """Settle one V2G session.

    Parameters
    ----------
    session : V2gSession
    program : V2gProgram
    export_prices : sequence of PriceInterval
        The site's export price, in order, covering every interval with export.
    events : sequence of DrEvent
        DR events, in order, not overlapping.

    Returns
    -------
    SessionStatement

    Raises
    ------
    SettlementError
        When export happens where no export price is known, or inputs overlap.
    """
    prices, events = list(export_prices), list(events)
    _check_sorted(prices, "export_prices")
    _check_sorted(events, "events")
    with localcontext() as ctx:
        ctx.prec = _PREC
        lines = _energy_lines(session, program, prices, events)
        lines += _capacity_lines(session, events)
        exported = sum((i.export_kwh for i in session.intervals), _ZERO)
        imported = sum((i.import_kwh for i in session.intervals), _ZERO)
        delivered = imported - exported
        target = session.target_kwh
        shortfall = max(_ZERO, target - delivered) if target is not None else _ZERO
        lines += _driver_lines(program, lines, exported, shortfall)
    settled = sum(
        (
            ln.quantity
            for ln in lines
            if ln.kind is LineKind.EXPORT_ENERGY
            or (ln.kind is LineKind.DR_EVENT and program.dr_excludes_export)
        ),
        _ZERO,
    )
    if settled != exported:  # pragma: no cover - the splitting above keeps every kWh
        raise SettlementError(
            f"session {session.session_id!r}: settled {settled} kWh of {exported}"
        )
    return SessionStatement(
        session.session_id,
        session.driver_id,
        session.site_id,
        program.currency,
        session.start,
        session.end,
        tuple(lines),
        exported,
        settled,
        imported,
        delivered,
        shortfall,
    )


# --- the scheduler's prices -----------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerPrices:
    """Per-kWh money of V2G discharge for the horizon scheduler, as settlement pays it.

    Attributes
    ----------
    start : datetime
        Start of step 0.
    dt_s : int
        Step length [s].
    export_price : tuple of Decimal
        What a kWh discharged in each step earns [currency/kWh]: the export price plus the DR
        payment (or the DR payment alone with ``dr_excludes_export``), time-weighted over the step.
    degradation_per_kwh : Decimal
        Paid to the driver per kWh discharged [currency/kWh].
    dr_payment : tuple of Decimal
        The DR payment's part of ``export_price`` [currency/kWh] (0 outside events).
    """

    start: datetime
    dt_s: int
    export_price: tuple[Decimal, ...]
    degradation_per_kwh: Decimal
    dr_payment: tuple[Decimal, ...] = ()

    def problem_kwargs(self) -> dict[str, Any]:
        """``export_price`` (the grid's part), ``discharge_value_per_kwh`` (the DR payment, on
        the EV's own discharge) and ``degradation_per_kwh`` for
        :class:`ampflow.engine.scheduler.ScheduleProblem` (which works in floats)."""
        dr = np.array([float(p) for p in self.dr_payment], dtype=np.float64)
        total = np.array([float(p) for p in self.export_price], dtype=np.float64)
        if dr.size != total.size:
            dr = np.zeros_like(total)
        return {
            "export_price": total - dr,
            "discharge_value_per_kwh": dr,
            "degradation_per_kwh": float(self.degradation_per_kwh),
        }


def scheduler_prices(
    export_prices: Sequence[PriceInterval],
    *,
    program: V2gProgram,
    start: datetime,
    n_steps: int,
    dt_s: int,
    events: Sequence[DrEvent] = (),
) -> SchedulerPrices:
    """The settled value of a discharged kWh per scheduler step, and the degradation cost.

    Giving these to ``ScheduleProblem(export_price=..., degradation_per_kwh=...)`` makes the
    plan optimise the money :func:`settle_session` pays the site and the driver together (the
    driver share is a transfer between them). The capacity payment is per kW committed, not per
    kWh, so it is not a price here. The DR payment is kept apart (``dr_payment``): it is paid
    for the EV's own discharge, so the scheduler values it on the discharge itself rather than
    on the site's export (which it values at ``min(export, import)``).

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 7, 1, 16, tzinfo=UTC)
    >>> prices = [PriceInterval(t, t.replace(hour=18), Decimal("0.10"))]
    >>> event = DrEvent("elrp-1", t.replace(minute=30), t.replace(hour=17), Decimal("2"))
    >>> program = V2gProgram("USD", Decimal("0.05"), Decimal("0.5"), Decimal("0.30"))
    >>> sp = scheduler_prices(prices, program=program, start=t, n_steps=4, dt_s=1800,
    ...                       events=[event])
    >>> [str(p) for p in sp.export_price], sp.degradation_per_kwh
    (['0.10', '2.10', '0.10', '0.10'], Decimal('0.05'))
    """
    start = _utc("start", start)
    for name, value in (("n_steps", n_steps), ("dt_s", dt_s)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SettlementError(f"{name}: expected an integer > 0, got {value!r}")
    prices, events = list(export_prices), list(events)
    _check_sorted(prices, "export_prices")
    _check_sorted(events, "events")
    step = timedelta(seconds=dt_s)
    cuts = _cuts(prices, events)
    price_at, event_at = _Lookup(prices), _Lookup(events)
    out, dr_out = [], []
    with localcontext() as ctx:
        ctx.prec = _PREC
        for k in range(n_steps):
            lo, hi = start + k * step, start + (k + 1) * step
            points = sorted({lo, hi} | {c for c in cuts if lo < c < hi})
            worth = dr_worth = _ZERO
            for a, b in itertools.pairwise(points):
                e = event_at(a)
                us, step_us = us_between(b - a), us_between(step)
                rate = _ZERO if e is None else events[e].payment_per_kwh
                dr_worth += rate * us / step_us
                if e is None or not program.dr_excludes_export:
                    p = price_at(a)
                    if p is None:
                        raise SettlementError(f"export_prices: expected a price covering {a}..{b}")
                    rate += prices[p].price_per_kwh
                worth += rate * us / step_us
            out.append(_fine(worth))
            dr_out.append(_fine(dr_worth))
    return SchedulerPrices(
        start, dt_s, tuple(out), program.degradation_per_kwh, dr_payment=tuple(dr_out)
    )
