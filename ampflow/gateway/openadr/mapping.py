"""The signal mapping: OpenADR signals in canonical units -> Ampflow caps and prices.

Everything here is a pure function of its arguments; the VENs parse the protocol messages
(:mod:`~ampflow.gateway.openadr.events`) into :class:`OadrEvent` and call :func:`map_event` once
per site to get the signals to store. The rules:

=====================================  ===========================================================
OpenADR signal                         Ampflow signal
=====================================  ===========================================================
SIMPLE level 0/1/2/3                   import cap = fraction x site import limit, per program
                                       (default 100/75/50/0 %), never below the site's minimum
                                       import (shedding every EV honours "emergency")
LOAD_DISPATCH setpoint,                absolute import cap [kW], from the event's own units
IMPORT_CAPACITY_LIMIT,
DISPATCH_SETPOINT, LOAD_CONTROL
x-loadControlSetpoint
LOAD_CONTROL x-loadControlCapacity     import cap = fraction (0-1) x site import limit
EXPORT_CAPACITY_LIMIT                  absolute export cap [kW]
ELECTRICITY_PRICE / ENERGY_PRICE /     import price series [currency/kWh]; no cap
PRICE
EXPORT_PRICE                           export price series [currency/kWh]; no cap
=====================================  ===========================================================

A cap that is negative, not finite, or implausibly large for the site (more than
``ABSURD_FACTOR`` times its import limit: almost always W read as kW) rejects the event
(:class:`BadEventError`). An absolute cap below the site's uncontrollable load cannot be honoured
(:class:`CannotHonourError`): the VEN opts out. A randomised start delays the caps by a per-site
offset drawn once from the window (:func:`randomized_offset_s`); a ramp-up period lowers the
cap in steps beforehand so that the site is at the event's level when it starts
(:func:`ramp_intervals`). Where events overlap, the lowest cap wins and priority breaks ties
(:func:`effective_caps`; the control loop applies the same rule to the stored signals).

Examples
--------
>>> simple_cap_kw(2, import_kw=150.0, min_import_kw=10.0)
75.0
>>> power_to_kw(42.0, unit="W", scale="k")
42.0
>>> split_cap_kw(90.0, [100.0, 50.0])
(60.0, 30.0)
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ampflow.engine.errors import AmpflowError
from ampflow.gateway.db.base import SignalKind

__all__ = [
    "ABSURD_FACTOR",
    "DEFAULT_SIMPLE_FRACTIONS",
    "NO_PRIORITY",
    "BadEventError",
    "CannotHonourError",
    "CapSegment",
    "Interval",
    "MappedSignal",
    "OadrEvent",
    "OadrSignal",
    "ProgramRules",
    "SignalRole",
    "SiteLimits",
    "effective_caps",
    "map_event",
    "power_to_kw",
    "price_per_kwh",
    "ramp_intervals",
    "randomized_offset_s",
    "si_scale_factor",
    "simple_cap_kw",
    "split_cap_kw",
]

DEFAULT_SIMPLE_FRACTIONS: tuple[float, float, float, float] = (1.0, 0.75, 0.5, 0.0)
ABSURD_FACTOR = 100.0  # a cap above this multiple of the site's import limit is a unit error
MAX_PRICE_PER_KWH = 1000.0  # |price| above this per kWh is a unit error
NO_PRIORITY = 1_000_000  # priority of an event that gives none (lower number wins)
_RAMP_STEPS = 4  # a ramp-up becomes at most this many steps
_RAMP_MIN_STEP_S = 60.0

_SI_SCALE = {
    "p": 1e-12,
    "n": 1e-9,
    "micro": 1e-6,
    "m": 1e-3,
    "c": 1e-2,
    "d": 1e-1,
    "none": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}
_POWER_UNITS_W = {"W": 1.0, "kW": 1e3, "KW": 1e3, "MW": 1e6}
_ENERGY_UNITS_KWH = {"KWH": 1.0, "kWh": 1.0, "Wh": 1e-3, "WH": 1e-3, "MWH": 1e3, "MWh": 1e3}


class BadEventError(AmpflowError):
    """A bad event: its field, the value and what was expected. The VEN opts out.

    Parameters
    ----------
    field : str
        Where in the event, e.g. ``"event_signals[0].measurement.unit"``.
    value : object
        The offending value.
    expected : str
        What would have been accepted.
    event_id : str, optional
    """

    def __init__(self, field: str, value: object, expected: str, *, event_id: str = "") -> None:
        self.field, self.value, self.expected, self.event_id = field, value, expected, event_id
        where = f"event {event_id!r}: " if event_id else ""
        super().__init__(f"{where}{field} = {value!r}: expected {expected}")

    def for_event(self, event_id: str) -> BadEventError:
        """The same rejection, naming the event."""
        return BadEventError(self.field, self.value, self.expected, event_id=event_id)


class CannotHonourError(AmpflowError):
    """A valid cap the site cannot follow (below its uncontrollable load): the VEN opts out."""


class SignalRole(StrEnum):
    """What an OpenADR signal's values mean once in canonical units."""

    SIMPLE_LEVEL = "simple_level"  # 0..3
    IMPORT_KW = "import_kw"  # absolute cap on the site's import [kW]
    IMPORT_FRACTION = "import_fraction"  # share of the site's import limit [0, 1]
    EXPORT_KW = "export_kw"  # absolute cap on the site's export [kW]
    IMPORT_PRICE = "import_price"  # [currency/kWh]
    EXPORT_PRICE = "export_price"  # [currency/kWh]

    @property
    def is_price(self) -> bool:
        return self in (SignalRole.IMPORT_PRICE, SignalRole.EXPORT_PRICE)


@dataclass(frozen=True, slots=True)
class Interval:
    """``value`` over ``[start, end)`` (tz-aware UTC)."""

    start: datetime
    end: datetime
    value: float


@dataclass(frozen=True, slots=True)
class OadrSignal:
    """One signal of an event, its values already in canonical units.

    Attributes
    ----------
    role : SignalRole
    label : str
        The protocol's name for it (``"LOAD_DISPATCH/setpoint"``, ``"IMPORT_CAPACITY_LIMIT"``),
        for logs and stored ids.
    intervals : tuple of Interval
        Sorted and non-overlapping.
    currency : str or None
        ISO 4217 code of a price.
    """

    role: SignalRole
    label: str
    intervals: tuple[Interval, ...]
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class OadrEvent:
    """An event from either protocol version, after parsing.

    Attributes
    ----------
    event_id : str
    modification : int
        2.0b modification number (3.x events carry none: 0).
    program : str or None
        2.0b market context or 3.x program id.
    priority : int
        Lower wins; :data:`NO_PRIORITY` when the event gives none.
    signals : tuple of OadrSignal
        The signals Ampflow acts on.
    targets : frozenset of str
        Resource names the event targets (empty: the whole VEN).
    cancelled, test : bool
        A cancelled event sets nothing; a test event is acknowledged and otherwise ignored.
    randomize_s, ramp_up_s : float
        Start randomisation window and ramp-up period [s].
    ignored : tuple of str
        Known signals that set nothing here (logged).
    """

    event_id: str
    modification: int = 0
    program: str | None = None
    priority: int = NO_PRIORITY
    signals: tuple[OadrSignal, ...] = ()
    targets: frozenset[str] = frozenset()
    cancelled: bool = False
    test: bool = False
    randomize_s: float = 0.0
    ramp_up_s: float = 0.0
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SiteLimits:
    """What the mapping needs to know of a site [kW]."""

    site_id: str
    import_kw: float
    min_import_kw: float = 0.0
    export_kw: float = 0.0


@dataclass(frozen=True, slots=True)
class ProgramRules:
    """Mapping rules of one program (2.0b market context or 3.x program).

    Attributes
    ----------
    simple_fractions : 4 floats in [0, 1]
        Share of the site's import limit allowed at SIMPLE levels 0, 1, 2, 3.
    """

    simple_fractions: tuple[float, float, float, float] = DEFAULT_SIMPLE_FRACTIONS

    def __post_init__(self) -> None:
        if len(self.simple_fractions) != 4 or any(
            not 0.0 <= f <= 1.0 for f in self.simple_fractions
        ):
            raise ValueError(
                f"simple_fractions: expected 4 shares in [0, 1], got {self.simple_fractions!r}"
            )


@dataclass(frozen=True, slots=True)
class MappedSignal:
    """A signal ready for the store: its kind, intervals in kW or currency/kWh, and label."""

    kind: SignalKind
    label: str
    intervals: tuple[Interval, ...]
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class CapSegment:
    """The binding cap over ``[start, end)`` and the event that sets it."""

    start: datetime
    end: datetime
    cap_kw: float
    event_id: str


# -- units ------------------------------------------------------------------------------------


def si_scale_factor(scale: str | None) -> float:
    """The multiplier of an OpenADR 2.0b ``siScaleCode`` (``None`` is ``"none"``).

    >>> si_scale_factor("k"), si_scale_factor("M"), si_scale_factor(None)
    (1000.0, 1000000.0, 1.0)
    """
    key = "none" if scale is None else str(scale)
    if key not in _SI_SCALE:
        raise BadEventError("siScaleCode", scale, f"one of {', '.join(_SI_SCALE)}")
    return _SI_SCALE[key]


def power_to_kw(value: float, *, unit: str | None, scale: str | None = None) -> float:
    """A power in the event's own unit and SI scale, in kW.

    Parameters
    ----------
    value : float
    unit : str
        ``W`` (2.0b ``powerReal``), ``kW``/``KW`` or ``MW``; anything else is rejected.
    scale : str, optional
        2.0b ``siScaleCode`` applied on top of the unit.

    Raises
    ------
    BadEventError
        For a missing or non-power unit, an unknown scale, or a value that is not finite.

    Examples
    --------
    >>> power_to_kw(42000.0, unit="W"), power_to_kw(0.5, unit="MW"), power_to_kw(3, unit="KW")
    (42.0, 500.0, 3.0)
    """
    if unit is None:
        raise BadEventError("units", None, "the power unit given in the event (W, kW or MW)")
    if unit not in _POWER_UNITS_W:
        raise BadEventError("units", unit, "a power unit (W, kW or MW)")
    return _finite(value) * _POWER_UNITS_W[unit] * si_scale_factor(scale) / 1000.0


def price_per_kwh(value: float, *, per: str | None, scale: str | None = None) -> float:
    """A price per ``per`` (``KWH``, ``MWH``, ``Wh``) in currency per kWh.

    >>> price_per_kwh(250.0, per="MWH")
    0.25
    """
    if per is None or per not in _ENERGY_UNITS_KWH:
        raise BadEventError("units", per, "an energy unit for the price (KWH or MWH)")
    price = _finite(value) * si_scale_factor(scale) / _ENERGY_UNITS_KWH[per]
    if abs(price) > MAX_PRICE_PER_KWH:
        raise BadEventError(
            "price", value, f"at most {MAX_PRICE_PER_KWH:g} per kWh in magnitude (check units)"
        )
    return price


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEventError("value", value, "a number")
    x = float(value)
    if not math.isfinite(x):
        raise BadEventError("value", value, "a finite number")
    return x


# -- caps ---------------------------------------------------------------------------------------


def simple_cap_kw(
    level: float,
    *,
    import_kw: float,
    min_import_kw: float = 0.0,
    fractions: Sequence[float] = DEFAULT_SIMPLE_FRACTIONS,
) -> float:
    """The import cap of a SIMPLE level [kW]: its share of the import limit, at least the
    site's minimum import.

    Raises
    ------
    BadEventError
        Unless ``level`` is 0, 1, 2 or 3.

    Examples
    --------
    >>> simple_cap_kw(3, import_kw=150.0, min_import_kw=10.0)
    10.0
    >>> simple_cap_kw(1, import_kw=150.0, fractions=(1, 0.9, 0.5, 0))
    135.0
    """
    x = _finite(level)
    if x not in (0.0, 1.0, 2.0, 3.0):
        raise BadEventError("SIMPLE level", level, "0, 1, 2 or 3")
    return max(float(fractions[int(x)]) * import_kw, min_import_kw)


def split_cap_kw(cap_kw: float, import_kws: Sequence[float]) -> tuple[float, ...]:
    """Share a cap among sites in proportion to their import limits (equally if all are 0).

    >>> split_cap_kw(30.0, [0.0, 0.0, 0.0])
    (10.0, 10.0, 10.0)
    """
    n = len(import_kws)
    if n == 0:
        return ()
    total = float(sum(import_kws))
    if total <= 0:
        return tuple(cap_kw / n for _ in import_kws)
    # The share first: ``cap * x`` can round in the subnormal range (1.5 * 5e-324 is 1e-323,
    # twice as much), while ``x / total`` is at most 1 and exact when one site has it all.
    return tuple(cap_kw * (float(x) / total) for x in import_kws)


def randomized_offset_s(key: str, window_s: float) -> float:
    """A start offset in ``[0, window_s]`` [s], whole seconds, the same for the same ``key``.

    Drawn from a hash of ``key`` (VEN, site and event), so a restart or a repeated message
    keeps the offset while different sites spread over the window.

    >>> randomized_offset_s("ven/site/ev-1", 0.0)
    0.0
    >>> 0 <= randomized_offset_s("ven/site/ev-1", 300.0) <= 300
    True
    """
    if not window_s > 0:
        return 0.0
    digest = hashlib.sha256(key.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return float(math.floor(u * (math.floor(window_s) + 1)))


def ramp_intervals(
    start: datetime,
    cap_kw: float,
    *,
    from_kw: float,
    ramp_s: float,
    max_steps: int = _RAMP_STEPS,
) -> tuple[Interval, ...]:
    """Steps that bring a cap from ``from_kw`` down to ``cap_kw`` over ``ramp_s`` before
    ``start``.

    Each step takes the value a straight line from ``(start - ramp_s, from_kw)`` to
    ``(start, cap_kw)`` reaches at the step's end, so the cap never lies above that line and the
    site is at the event's level when it starts. No steps when there is nothing to ramp down.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    >>> [x.value for x in ramp_intervals(t, 20.0, from_kw=100.0, ramp_s=240.0)]
    [80.0, 60.0, 40.0, 20.0]
    """
    if ramp_s < _RAMP_MIN_STEP_S or from_kw <= cap_kw:
        return ()
    n = max(1, min(max_steps, int(ramp_s // _RAMP_MIN_STEP_S)))
    step = timedelta(seconds=ramp_s / n)
    first = start - timedelta(seconds=ramp_s)
    return tuple(
        Interval(
            first + i * step,
            start if i == n - 1 else first + (i + 1) * step,
            from_kw + (cap_kw - from_kw) * (i + 1) / n,
        )
        for i in range(n)
    )


def _delay(intervals: Sequence[Interval], offset_s: float) -> tuple[Interval, ...]:
    """Intervals with the first start moved ``offset_s`` later (those that end before dropped)."""
    if offset_s <= 0 or not intervals:
        return tuple(intervals)
    begin = intervals[0].start + timedelta(seconds=offset_s)
    return tuple(replace(iv, start=max(iv.start, begin)) for iv in intervals if iv.end > begin)


def effective_caps(
    events: Sequence[tuple[str, int, Sequence[Interval]]],
) -> list[CapSegment]:
    """The binding cap over time when events overlap: the lowest cap wins, priority breaks ties.

    Parameters
    ----------
    events : sequence of (event_id, priority, intervals)
        Caps [kW]; a lower priority number is the higher priority.

    Returns
    -------
    list of CapSegment
        Sorted, non-overlapping, adjacent segments with the same cap and event merged; times no
        event covers are left out. Among equal lowest caps the segment names the event with the
        lowest priority number (then the smallest id).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> t = [datetime(2026, 1, 1, h, tzinfo=UTC) for h in range(4)]
    >>> segs = effective_caps([("a", 1, [Interval(t[0], t[2], 50.0)]),
    ...                        ("b", 0, [Interval(t[1], t[3], 50.0)])])
    >>> [(s.start.hour, s.end.hour, s.cap_kw, s.event_id) for s in segs]
    [(0, 1, 50.0, 'a'), (1, 3, 50.0, 'b')]
    """
    points = sorted({t for _, _, ivs in events for iv in ivs for t in (iv.start, iv.end)})
    out: list[CapSegment] = []
    for lo, hi in itertools.pairwise(points):
        best: tuple[float, int, str] | None = None
        for event_id, priority, ivs in events:
            for iv in ivs:
                if iv.start <= lo and iv.end >= hi:
                    cand = (iv.value, priority, event_id)
                    best = cand if best is None or cand < best else best
        if best is None:
            continue
        cap, _, event_id = best
        prev = out[-1] if out else None
        if prev is not None and prev.end == lo and (prev.cap_kw, prev.event_id) == (cap, event_id):
            out[-1] = replace(prev, end=hi)
        else:
            out.append(CapSegment(lo, hi, cap, event_id))
    return out


# -- one event at one site ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    site: SiteLimits
    rules: ProgramRules
    share: float
    key: str
    event: OadrEvent = field(repr=False)


def map_event(
    event: OadrEvent,
    site: SiteLimits,
    *,
    rules: ProgramRules | None = None,
    share: float = 1.0,
    key: str = "",
) -> tuple[MappedSignal, ...]:
    """The store-ready signals of ``event`` at ``site``.

    Parameters
    ----------
    event : OadrEvent
    site : SiteLimits
    rules : ProgramRules, optional
        The program's SIMPLE fractions (default 100/75/50/0 %).
    share : float
        This site's share of absolute caps when the event targets several sites of one VEN
        (see :func:`split_cap_kw`).
    key : str
        Seed of the randomised start (VEN, site and event).

    Raises
    ------
    BadEventError
        A negative, non-finite or implausible cap, or a fraction outside [0, 1].
    CannotHonourError
        An absolute import cap below the site's minimum import.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> t0, t1 = datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 1, 1, 13, tzinfo=UTC)
    >>> ev = OadrEvent("e1", signals=(OadrSignal(SignalRole.SIMPLE_LEVEL, "SIMPLE",
    ...                                          (Interval(t0, t1, 2.0),)),))
    >>> [(m.kind.value, m.intervals[0].value) for m in map_event(ev, SiteLimits("s", 150.0))]
    [('import_cap_kw', 75.0)]
    """
    ctx = _Context(site, rules or ProgramRules(), share, key or event.event_id, event)
    try:
        return tuple(_map_signal(sig, ctx) for sig in event.signals if sig.intervals)
    except BadEventError as exc:
        raise exc.for_event(event.event_id) from None


def _map_signal(sig: OadrSignal, ctx: _Context) -> MappedSignal:
    if sig.role.is_price:
        kind = (
            SignalKind.IMPORT_PRICE
            if sig.role is SignalRole.IMPORT_PRICE
            else SignalKind.EXPORT_PRICE
        )
        return MappedSignal(kind, sig.label, sig.intervals, sig.currency)
    site = ctx.site
    values = [_cap_kw(sig, iv.value, ctx) for iv in sig.intervals]
    ivs = tuple(replace(iv, value=v) for iv, v in zip(sig.intervals, values, strict=True))
    ivs = _delay(ivs, randomized_offset_s(ctx.key, ctx.event.randomize_s))
    if sig.role is SignalRole.EXPORT_KW:
        return MappedSignal(SignalKind.EXPORT_CAP_KW, sig.label, ivs)
    if ivs and ctx.event.ramp_up_s > 0:
        ramp = ramp_intervals(
            ivs[0].start, ivs[0].value, from_kw=site.import_kw, ramp_s=ctx.event.ramp_up_s
        )
        ivs = ramp + ivs
    return MappedSignal(SignalKind.IMPORT_CAP_KW, sig.label, ivs)


def _cap_kw(sig: OadrSignal, value: float, ctx: _Context) -> float:
    site = ctx.site
    where = f"{sig.label} value"
    if sig.role is SignalRole.SIMPLE_LEVEL:
        return simple_cap_kw(
            value,
            import_kw=site.import_kw,
            min_import_kw=site.min_import_kw,
            fractions=ctx.rules.simple_fractions,
        )
    x = _finite(value)
    if sig.role is SignalRole.IMPORT_FRACTION:
        if not 0.0 <= x <= 1.0:
            raise BadEventError(where, value, "a fraction of capacity in [0, 1]")
        cap = x * site.import_kw
    else:
        if x < 0:
            raise BadEventError(where, value, "a cap of at least 0 kW")
        cap = x * ctx.share
        limit = max(site.import_kw, site.export_kw) * ABSURD_FACTOR
        if cap > limit:
            raise BadEventError(
                where,
                value,
                f"at most {ABSURD_FACTOR:g} x site {site.site_id!r}'s limit ({limit:g} kW); "
                "check the event's units",
            )
    if sig.role is not SignalRole.EXPORT_KW and cap < site.min_import_kw - 1e-9:
        raise CannotHonourError(
            f"site {site.site_id!r}: {sig.label} cap {cap:g} kW is below the site's "
            f"uncontrollable load of {site.min_import_kw:g} kW"
        )
    return cap
