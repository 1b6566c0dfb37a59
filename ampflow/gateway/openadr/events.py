"""Protocol messages -> :class:`~ampflow.gateway.openadr.mapping.OadrEvent`, units resolved.

:func:`parse_event_20` reads an OpenADR 2.0b ``oadrEvent`` as openleadr hands it to
``on_event`` (a dict with ``event_descriptor``, ``active_period``, ``event_signals``,
``targets``); :func:`parse_event_3` reads an OpenADR 3.1 ``event`` object as JSON (camelCase,
as the VTN sends it), with its program for default payload descriptors. Both are pure: every
problem raises :class:`~ampflow.gateway.openadr.mapping.BadEventError` naming the field, the
value and what was expected, and values come out in kW, fractions, SIMPLE levels or
currency/kWh, read from the event's own units (2.0b ``itemBase`` unit and ``siScaleCode``, 3.x
payload descriptor ``units``), never assumed.

Signals Ampflow does not act on but that ask nothing of it (2.0b ``DEMAND_CHARGE``, ``BID_*``;
3.x ``GHG``, ``ALERT_*``, capacity reservations, ...) are listed in ``ignored``. Instructions it
cannot follow (2.0b ``LOAD_DISPATCH`` ``delta``, relative 3.x setpoints) and unknown signal
types reject the event.

Examples
--------
>>> ev = parse_event_3({
...     "id": "ev1", "programID": "p1", "priority": 1,
...     "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR",
...                             "payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
...     "intervalPeriod": {"start": "2026-01-01T12:00:00Z", "duration": "PT1H"},
...     "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [40]}]}],
... })
>>> ev.signals[0].role.value, ev.signals[0].intervals[0].value, ev.signals[0].intervals[0].end
('import_kw', 40.0, datetime.datetime(2026, 1, 1, 13, 0, tzinfo=datetime.timezone.utc))
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ampflow.gateway.openadr.mapping import (
    NO_PRIORITY,
    BadEventError,
    Interval,
    OadrEvent,
    OadrSignal,
    SignalRole,
    power_to_kw,
    price_per_kwh,
)

__all__ = ["OPEN_ENDED", "parse_event_3", "parse_event_20", "parse_iso_duration"]

OPEN_ENDED = timedelta(days=3650)  # how far an open-ended event reaches
_REPEAT_HORIZON = timedelta(days=7)  # repeating 3.x intervals are expanded this far ahead
_MAX_INTERVALS = 10_000
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DURATION = re.compile(
    r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?"
    r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)
_INFINITE = timedelta(days=100 * 365)  # a duration this long means "until further notice"

# -- OpenADR 2.0b -----------------------------------------------------------------------------

_ROLES_20: dict[tuple[str, str], SignalRole] = {
    ("SIMPLE", "level"): SignalRole.SIMPLE_LEVEL,
    ("simple", "level"): SignalRole.SIMPLE_LEVEL,
    ("LOAD_DISPATCH", "setpoint"): SignalRole.IMPORT_KW,
    ("LOAD_CONTROL", "x-loadControlCapacity"): SignalRole.IMPORT_FRACTION,
    ("LOAD_CONTROL", "x-loadControlSetpoint"): SignalRole.IMPORT_KW,
    ("ELECTRICITY_PRICE", "price"): SignalRole.IMPORT_PRICE,
    ("ENERGY_PRICE", "price"): SignalRole.IMPORT_PRICE,
}
_IGNORED_20 = frozenset({"DEMAND_CHARGE", "BID_PRICE", "BID_LOAD", "BID_ENERGY", "CHARGE_STATE"})


def parse_event_20(event: Mapping[str, Any]) -> OadrEvent:
    """An openleadr event dict as an :class:`OadrEvent` (see the module notes).

    A cancelled event is returned with ``cancelled=True`` and no signals, whatever else it
    holds. A priority of 0 means "none" in 2.0b and becomes ``NO_PRIORITY``.

    Raises
    ------
    BadEventError
    """
    desc = _mapping(event.get("event_descriptor"), "event_descriptor")
    event_id = desc.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise BadEventError("event_descriptor.event_id", event_id, "a non-empty string")
    try:
        return _parse_20(event, desc, event_id)
    except BadEventError as exc:
        raise exc.for_event(event_id) from None


def _parse_20(event: Mapping[str, Any], desc: Mapping[str, Any], event_id: str) -> OadrEvent:
    modification = _int(desc.get("modification_number", 0), "modification_number", low=0)
    priority = _int(desc.get("priority", 0) or 0, "priority", low=0)
    program = desc.get("market_context")
    base = OadrEvent(
        event_id,
        modification=modification,
        program=str(program) if program is not None else None,
        priority=priority or NO_PRIORITY,
        targets=_targets_20(event.get("targets")),
        test=bool(desc.get("test_event", False)),
    )
    if desc.get("event_status") == "cancelled":
        return OadrEvent(event_id, modification=modification, program=base.program, cancelled=True)
    period = _mapping(event.get("active_period"), "active_period")
    start = _aware(period.get("dtstart"), "active_period.dtstart")
    tolerance = period.get("tolerance") or {}
    startafter = (tolerance.get("tolerate") or {}).get("startafter") or tolerance.get("startafter")
    ramp = period.get("ramp_up", period.get("ramp_up_period"))
    raw = event.get("event_signals")
    if isinstance(raw, Mapping):
        raw = raw.get("event_signals")
    if not isinstance(raw, list) or not raw:
        raise BadEventError("event_signals", raw, "at least one event signal")
    signals: list[OadrSignal] = []
    ignored: list[str] = []
    for i, sig in enumerate(raw):
        parsed = _signal_20(_mapping(sig, f"event_signals[{i}]"), i, start)
        if isinstance(parsed, str):
            ignored.append(parsed)
        else:
            signals.append(parsed)
    return OadrEvent(
        event_id,
        modification=base.modification,
        program=base.program,
        priority=base.priority,
        signals=tuple(signals),
        targets=base.targets,
        test=base.test,
        randomize_s=_seconds(startafter, "active_period.tolerance.startafter"),
        ramp_up_s=_seconds(ramp, "active_period.ramp_up"),
        ignored=tuple(ignored),
    )


def _targets_20(raw: object) -> frozenset[str]:
    if not isinstance(raw, list):
        return frozenset()
    found: set[str] = set()
    for t in raw:
        value = t.get("resource_id") if isinstance(t, Mapping) else None
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            found.update(str(v) for v in value)
    return frozenset(found)


def _signal_20(sig: Mapping[str, Any], i: int, start: datetime) -> OadrSignal | str:
    name, kind = str(sig.get("signal_name")), str(sig.get("signal_type"))
    where = f"event_signals[{i}]"
    role = _ROLES_20.get((name, kind))
    if role is None:
        if name in _IGNORED_20:
            return f"{name}/{kind}"
        if any(n == name for n, _ in _ROLES_20):
            raise BadEventError(f"{where}.signal_type", kind, f"a {name} type Ampflow follows")
        raise BadEventError(f"{where}.signal_name", name, "a signal name Ampflow knows")
    label = f"{name}/{kind}"
    convert, currency = _converter_20(role, sig.get("measurement"), where)
    raw = sig.get("intervals")
    if not isinstance(raw, list) or not raw:
        raise BadEventError(f"{where}.intervals", raw, "at least one interval")
    intervals: list[Interval] = []
    at = start
    for j, iv in enumerate(raw):
        item = _mapping(iv, f"{where}.intervals[{j}]")
        dur = _timedelta(item.get("duration"), f"{where}.intervals[{j}].duration")
        begin = item.get("dtstart")
        s = at if begin is None else _aware(begin, f"{where}.intervals[{j}].dtstart")
        end = s + (dur if dur > timedelta(0) else OPEN_ENDED)
        intervals.append(Interval(s, end, convert(item.get("signal_payload"))))
        at = end
    return OadrSignal(role, label, _checked(intervals, f"{where}.intervals"), currency)


def _converter_20(role: SignalRole, measurement: object, where: str) -> tuple[Any, str | None]:
    if role in (SignalRole.SIMPLE_LEVEL, SignalRole.IMPORT_FRACTION):
        return _number, None
    if not isinstance(measurement, Mapping):
        what = "power (powerReal)" if role is SignalRole.IMPORT_KW else "price (currencyPerKWh)"
        raise BadEventError(f"{where}.itemBase", measurement, f"the {what} unit of the signal")
    name, unit, scale = measurement.get("name"), measurement.get("unit"), measurement.get("scale")
    if role is SignalRole.IMPORT_KW:
        if name != "powerReal":
            raise BadEventError(f"{where}.itemBase", name, "powerReal (a real power)")
        return (lambda v: power_to_kw(_number(v), unit=unit, scale=scale)), None
    if name != "currencyPerKWh":
        raise BadEventError(f"{where}.itemBase", name, "currencyPerKWh")
    if not isinstance(unit, str) or not _CURRENCY.match(unit):
        raise BadEventError(f"{where}.itemBase.itemUnits", unit, "an ISO 4217 currency code")
    return (lambda v: price_per_kwh(_number(v), per="KWH", scale=scale)), unit


# -- OpenADR 3.1 --------------------------------------------------------------------------------

_ROLES_3: dict[str, SignalRole] = {
    "SIMPLE": SignalRole.SIMPLE_LEVEL,
    "IMPORT_CAPACITY_LIMIT": SignalRole.IMPORT_KW,
    "DISPATCH_SETPOINT": SignalRole.IMPORT_KW,
    "EXPORT_CAPACITY_LIMIT": SignalRole.EXPORT_KW,
    "PRICE": SignalRole.IMPORT_PRICE,
    "EXPORT_PRICE": SignalRole.EXPORT_PRICE,
}
_UNFOLLOWED_3 = frozenset(
    {
        "DISPATCH_SETPOINT_RELATIVE",
        "CONTROL_SETPOINT",
        "CONTROL_LEVEL_OFFSET",
        "CONTROL_LEVEL_OFFSET_PERCENT",
    }
)
_IGNORED_3 = frozenset(
    {
        "PRICE_ALTERNATE",
        "GHG",
        "CURVE",
        "OLS",
        "CHARGE_STATE_SETPOINT",
        "DISPATCH_INSTRUCTION",
        *(
            f"{d}_CAPACITY_{x}"
            for d in ("IMPORT", "EXPORT")
            for x in (
                "SUBSCRIPTION",
                "RESERVATION",
                "RESERVATION_FEE",
                "AVAILABLE",
                "AVAILABLE_PRICE",
            )
        ),
        *(
            f"ALERT_{x}"
            for x in (
                "GRID_EMERGENCY",
                "BLACK_START",
                "POSSIBLE_OUTAGE",
                "FLEX_ALERT",
                "FIRE",
                "FREEZING",
                "WIND",
                "TSUNAMI",
                "AIR_QUALITY",
                "OTHER",
            )
        ),
        "CTA2045_REBOOT",
        "CTA2045_SET_OVERRIDE_STATUS",
    }
)


def parse_event_3(
    event: Mapping[str, Any],
    *,
    program: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> OadrEvent:
    """An OpenADR 3.1 event (JSON) as an :class:`OadrEvent` (see the module notes).

    Parameters
    ----------
    event : mapping
        The event object, camelCase as on the wire.
    program : mapping, optional
        Its program, whose ``payloadDescriptors`` apply where the event has none.
    now : datetime, optional
        The instant a start of ``0001-01-01`` ("now") stands for.

    Raises
    ------
    BadEventError
    """
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise BadEventError("id", event_id, "a non-empty object id")
    try:
        return _parse_3(event, program or {}, now or datetime.now(UTC), event_id)
    except BadEventError as exc:
        raise exc.for_event(event_id) from None


def _parse_3(
    event: Mapping[str, Any], program: Mapping[str, Any], now: datetime, event_id: str
) -> OadrEvent:
    priority = event.get("priority")
    prio = NO_PRIORITY if priority is None else _int(priority, "priority", low=0)
    program_id = event.get("programID")
    base = event.get("intervalPeriod") or {}
    if not isinstance(base, Mapping):
        raise BadEventError("intervalPeriod", base, "an object with start and duration")
    if _is_cancel(base):
        return OadrEvent(event_id, program=_str_or_none(program_id), cancelled=True)
    raw = event.get("intervals")
    if not isinstance(raw, list) or not raw:
        raise BadEventError("intervals", raw, "at least one interval")
    units = _descriptors(program.get("payloadDescriptors")) | _descriptors(
        event.get("payloadDescriptors")
    )
    spans = _spans_3(raw, base, now, event.get("duration"))
    values: dict[str, list[Interval]] = {}
    ignored: list[str] = []
    for (start, end, k), iv in spans:
        payloads = iv.get("payloads")
        if not isinstance(payloads, list) or not payloads:
            raise BadEventError(f"intervals[{k}].payloads", payloads, "at least one payload")
        for p in payloads:
            ptype, vals = _payload(p, k)
            if ptype in _IGNORED_3:
                ignored.append(ptype)
                continue
            role = _role_3(ptype, k)
            value = _value_3(role, ptype, vals[0], units.get(ptype))
            values.setdefault(ptype, []).append(Interval(start, end, value))
    signals = tuple(
        OadrSignal(
            _ROLES_3[ptype],
            ptype,
            _checked(ivs, f"intervals ({ptype})"),
            (units.get(ptype) or (None, None))[1] if _ROLES_3[ptype].is_price else None,
        )
        for ptype, ivs in values.items()
    )
    return OadrEvent(
        event_id,
        program=_str_or_none(program_id),
        priority=prio,
        signals=signals,
        targets=_targets_3(event.get("targets")),
        randomize_s=_seconds(_duration_or_none(base.get("randomizeStart")), "randomizeStart"),
        ignored=tuple(sorted(set(ignored))),
    )


def _is_cancel(period: Mapping[str, Any]) -> bool:
    """The 3.x idiom for "cancelled": start 0001-01-01 and duration PT0S."""
    start, dur = period.get("start"), period.get("duration")
    return isinstance(start, str) and start.startswith("0001-01-01") and dur in ("PT0S", "P0D")


def _spans_3(
    raw: Sequence[Any], base: Mapping[str, Any], now: datetime, event_duration: object
) -> list[tuple[tuple[datetime, datetime, int], Mapping[str, Any]]]:
    """Each interval's ``[start, end)`` and index, repeated or trimmed by the event duration."""
    at = _start_3(base.get("start"), "intervalPeriod.start", now) if base.get("start") else None
    step = _duration_or_none(base.get("duration", "PT0S"), "intervalPeriod.duration")
    out: list[tuple[tuple[datetime, datetime, int], Mapping[str, Any]]] = []
    for k, item in enumerate(raw):
        iv = _mapping(item, f"intervals[{k}]")
        own = iv.get("intervalPeriod") or {}
        if not isinstance(own, Mapping):
            raise BadEventError(f"intervals[{k}].intervalPeriod", own, "an object")
        start = (
            _start_3(own["start"], f"intervals[{k}].intervalPeriod.start", now)
            if (own.get("start"))
            else at
        )
        if start is None:
            raise BadEventError(f"intervals[{k}].intervalPeriod.start", None, "a start time")
        dur = (
            _duration_or_none(own["duration"], f"intervals[{k}].intervalPeriod.duration")
            if "duration" in own
            else step
        )
        end = start + OPEN_ENDED if dur is None or dur <= timedelta(0) else start + dur
        out.append(((start, end, k), iv))
        at = end
    if event_duration is None:
        return out
    return _repeat(out, _duration_or_none(event_duration, "duration"), now)


def _repeat(
    spans: list[tuple[tuple[datetime, datetime, int], Mapping[str, Any]]],
    duration: timedelta | None,
    now: datetime,
) -> list[tuple[tuple[datetime, datetime, int], Mapping[str, Any]]]:
    """Intervals trimmed to the event's ``duration``, or repeated to fill it (``None``: for
    ever, which one interval means literally and several up to a week ahead)."""
    first, last_end = spans[0][0][0], spans[-1][0][1]
    if duration is None and len(spans) == 1:
        (start, _, k), iv = spans[0]
        return [((start, start + OPEN_ENDED, k), iv)]
    cycle = last_end - first
    if cycle <= timedelta(0) or cycle >= OPEN_ENDED:
        return spans
    if duration is not None and first + duration <= last_end:  # trimmed
        end = first + duration
        return [((s, min(e, end), k), iv) for (s, e, k), iv in spans if s < end]
    end = now + _REPEAT_HORIZON
    if duration is not None:
        end = min(first + duration, end)
    out: list[tuple[tuple[datetime, datetime, int], Mapping[str, Any]]] = []
    shift = timedelta(0)
    while first + shift < end and len(out) < _MAX_INTERVALS:
        out.extend(
            ((s + shift, min(e + shift, end), k), iv) for (s, e, k), iv in spans if s + shift < end
        )
        shift += cycle
    return out


def _payload(p: object, k: int) -> tuple[str, list[Any]]:
    item = _mapping(p, f"intervals[{k}].payloads[]")
    ptype, vals = item.get("type"), item.get("values")
    if not isinstance(ptype, str) or not ptype:
        raise BadEventError(f"intervals[{k}].payloads[].type", ptype, "a payload type")
    if not isinstance(vals, list) or not vals:
        raise BadEventError(f"intervals[{k}].payloads[{ptype}].values", vals, "at least one value")
    return ptype, vals


def _role_3(ptype: str, k: int) -> SignalRole:
    role = _ROLES_3.get(ptype)
    if role is not None:
        return role
    if ptype in _UNFOLLOWED_3:
        raise BadEventError(
            f"intervals[{k}].payloads.type", ptype, "an absolute cap or a price (not relative)"
        )
    raise BadEventError(f"intervals[{k}].payloads.type", ptype, "a payload type Ampflow knows")


def _value_3(
    role: SignalRole, ptype: str, value: object, unit: tuple[str | None, str | None] | None
) -> float:
    x = _number(value)
    if role in (SignalRole.SIMPLE_LEVEL,):
        return x
    units = unit[0] if unit else None
    where = f"payloadDescriptors[{ptype}].units"
    if role.is_price:
        if units is None:
            raise BadEventError(where, None, "the price's energy unit (KWH)")
        return price_per_kwh(x, per=units)
    if units is None:
        raise BadEventError(where, None, "the power unit of the limit (KW)")
    if units == "PERCENT":
        raise BadEventError(where, units, "an absolute power unit (KW)")
    return power_to_kw(x, unit=units)


def _descriptors(raw: object) -> dict[str, tuple[str | None, str | None]]:
    """payloadType -> (units, currency) of the event payload descriptors."""
    out: dict[str, tuple[str | None, str | None]] = {}
    if not isinstance(raw, list):
        return out
    for d in raw:
        if not isinstance(d, Mapping) or d.get("objectType", "EVENT_PAYLOAD_DESCRIPTOR") not in (
            "EVENT_PAYLOAD_DESCRIPTOR",
        ):
            continue
        ptype = d.get("payloadType")
        if isinstance(ptype, str):
            units, currency = d.get("units"), d.get("currency")
            out[ptype] = (
                str(units) if units is not None else None,
                str(currency) if currency is not None else None,
            )
    return out


def _targets_3(raw: object) -> frozenset[str]:
    if not isinstance(raw, list):
        return frozenset()
    found: set[str] = set()
    for t in raw:
        if isinstance(t, str):
            found.add(t)
        elif isinstance(t, Mapping) and isinstance(t.get("values"), list):  # 3.0.1 valuesMap
            found.update(str(v) for v in t["values"])
    return frozenset(found)


def _start_3(value: object, where: str, now: datetime) -> datetime:
    if isinstance(value, str) and value.startswith("0001-01-01"):
        return now
    return _aware(value, where)


# -- shared helpers -----------------------------------------------------------------------------


def parse_iso_duration(text: str) -> timedelta | None:
    """An ISO 8601 duration as the OpenADR 3 schema allows it; ``None`` means "for ever".

    Years count 365 days and months 30; a duration of 100 years or more (``P9999Y``) stands for
    infinity.

    >>> parse_iso_duration("PT1H30M"), parse_iso_duration("P9999Y")
    (datetime.timedelta(seconds=5400), None)
    """
    m = _DURATION.match(text)
    if m is None:
        raise BadEventError("duration", text, "an ISO 8601 duration such as PT1H")
    sign, years, months, days, unit, hours, minutes, seconds = m.groups()
    if sign:
        raise BadEventError("duration", text, "a duration of at least 0")
    n_days = int(days or 0) * (7 if unit == "W" else 1)
    total = timedelta(
        days=int(years or 0) * 365 + int(months or 0) * 30 + n_days,
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=float(seconds or 0),
    )
    return None if total >= _INFINITE else total


def _duration_or_none(value: object, where: str = "duration") -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise BadEventError(where, value, "an ISO 8601 duration")
    try:
        return parse_iso_duration(value)
    except BadEventError as exc:
        raise BadEventError(where, value, exc.expected) from None


def _checked(intervals: Sequence[Interval], where: str) -> tuple[Interval, ...]:
    out = sorted(intervals, key=lambda iv: iv.start)
    for a, b in itertools.pairwise(out):
        if b.start < a.end:
            raise BadEventError(
                where,
                b.start.isoformat(),
                f"intervals that do not overlap (the previous one ends {a.end.isoformat()})",
            )
    for iv in out:
        if iv.end <= iv.start:
            raise BadEventError(where, iv.end.isoformat(), "an end after the start")
    return tuple(out)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadEventError(where, value, "an object")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEventError("value", value, "a number")
    x = float(value)
    if not math.isfinite(x):
        raise BadEventError("value", value, "a finite number")
    return x


def _int(value: object, where: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadEventError(where, value, f"an integer of at least {low}")
    return value


def _aware(value: object, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise BadEventError(where, value, "an RFC 3339 date-time") from None
    if not isinstance(value, datetime):
        raise BadEventError(where, value, "a date-time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadEventError(where, value.isoformat(), "a date-time with a UTC offset")
    return value.astimezone(UTC)


def _timedelta(value: object, where: str) -> timedelta:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise BadEventError(where, str(value), "a duration of at least 0")
        return value
    out = _duration_or_none(value, where)
    return OPEN_ENDED if out is None else out


def _seconds(value: object, where: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise BadEventError(where, str(value), "a duration of at least 0")
        return value.total_seconds()
    raise BadEventError(where, value, "a duration")


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
