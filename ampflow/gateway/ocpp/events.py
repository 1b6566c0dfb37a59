"""Domain events from OCPP messages, and meter values in canonical units.

The per-version handlers (:mod:`.v16`, :mod:`.v201`) only translate a message into one of the
frozen dataclasses here and hand it to the station's :class:`~.station.StationLink`; nothing in
this module knows about a version's message shapes beyond the sampled values, which differ in
small ways (1.6 sends values as strings with a ``unit``; 2.0.1 sends numbers with a
``unitOfMeasure`` that has a power-of-ten ``multiplier``).

Meter values
------------
:func:`parse_meter_values` turns ``meterValue`` lists into :class:`Reading` rows in the units of
:class:`~ampflow.gateway.db.base.Measurand` (Wh, W, A, V, %, Celsius, Hz), and sums up the latest
instant in a :class:`MeterSummary`. It copes with what real chargers send (see
``shared/reference/ocpp.md``, pain points 16, 20, 21): kW and kWh units, ``L1-N`` phase labels,
``Current.Import`` on ``N`` (kept, never counted as load), values that are not numbers (skipped),
signed data (skipped) and missing totals. When a batch has no total import power, the summary
derives it from the per-phase powers, or else from the per-phase currents times the reported (or
nominal) voltage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ampflow.gateway.db.base import Measurand, Phase

__all__ = [
    "AuthStatus",
    "BootInfo",
    "ChargingNeeds",
    "MeterBatch",
    "MeterSummary",
    "Reading",
    "StatusChange",
    "TxEnd",
    "TxStart",
    "parse_meter_values",
    "parse_time",
    "parse_time_or_none",
]

logger = logging.getLogger(__name__)


class AuthStatus(StrEnum):
    """Authorisation of an idTag / IdToken (the values both versions share)."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"


@dataclass(frozen=True, slots=True)
class BootInfo:
    """A BootNotification: who the station says it is."""

    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None
    reason: str | None = None  # 2.0.1 only


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A StatusNotification; ``connector`` 0 is the station itself."""

    connector: int
    status: str
    at: datetime
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One sampled value in its canonical unit; ``ts`` in epoch seconds."""

    ts: int
    measurand: Measurand
    phase: Phase
    value: float


@dataclass(frozen=True, slots=True)
class MeterSummary:
    """The latest instant of a batch: import power [W] (measured or derived), register [Wh], SoC."""

    ts: int
    power_w: float | None
    energy_wh: float | None
    soc_pct: float | None
    power_derived: bool = False


@dataclass(frozen=True, slots=True)
class MeterBatch:
    """Meter values of one connector (from MeterValues or inside a transaction message)."""

    connector: int
    readings: tuple[Reading, ...]
    summary: MeterSummary | None
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class TxStart:
    """A transaction began on ``connector`` (1.6 StartTransaction, 2.0.1 TransactionEvent)."""

    connector: int
    at: datetime
    id_token: str | None
    meter_start_wh: float | None
    transaction_id: str | None = None  # chosen by the station in 2.0.1; by us in 1.6
    remote_start_id: int | None = None


@dataclass(frozen=True, slots=True)
class TxEnd:
    """A transaction ended."""

    transaction_id: str
    at: datetime
    meter_stop_wh: float | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ChargingNeeds:
    """ISO 15118 NotifyEVChargingNeeds, as session targets (``None``: not given)."""

    connector: int
    departure_at: datetime | None
    energy_kwh: float | None
    ev_max_kw: float | None
    battery_kwh: float | None
    soc_pct: float | None
    soc_target_pct: float | None
    ev_max_a: float | None = None  # AC: per phase; the station's phases and voltage give kW


def parse_time(value: object, *, default: datetime) -> datetime:
    """An OCPP timestamp as tz-aware UTC; ``default`` if missing or unreadable.

    Examples
    --------
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> parse_time("2026-03-02T08:00:00+01:00", default=now).isoformat()
    '2026-03-02T07:00:00+00:00'
    >>> parse_time("yesterday", default=now) == now
    True
    """
    if not isinstance(value, str):
        return default
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        logger.debug("unreadable timestamp %r, using %s", value, default)
        return default
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)  # OCPP times are UTC; some chargers drop the suffix
    return t.astimezone(UTC)


def parse_time_or_none(value: object) -> datetime | None:
    """An OCPP timestamp as tz-aware UTC, or None if missing or unreadable."""
    if not isinstance(value, str):
        return None
    sentinel = datetime.min.replace(tzinfo=UTC)
    t = parse_time(value, default=sentinel)
    return None if t == sentinel else t


_MEASURANDS: Mapping[str, Measurand] = {
    "Energy.Active.Import.Register": Measurand.ENERGY_IMPORT_WH,
    "Energy.Active.Export.Register": Measurand.ENERGY_EXPORT_WH,
    "Power.Active.Import": Measurand.POWER_IMPORT_W,
    "Power.Active.Export": Measurand.POWER_EXPORT_W,
    "Current.Import": Measurand.CURRENT_IMPORT_A,
    "Current.Export": Measurand.CURRENT_EXPORT_A,
    "Current.Offered": Measurand.CURRENT_OFFERED_A,
    "Power.Offered": Measurand.POWER_OFFERED_W,
    "Voltage": Measurand.VOLTAGE_V,
    "SoC": Measurand.SOC_PCT,
    "Temperature": Measurand.TEMPERATURE_C,
    "Frequency": Measurand.FREQUENCY_HZ,
}

# Unit name -> (canonical unit, factor); the canonical unit must match the measurand's.
_UNITS: Mapping[str, tuple[str, float]] = {
    "Wh": ("Wh", 1.0),
    "kWh": ("Wh", 1000.0),
    "W": ("W", 1.0),
    "kW": ("W", 1000.0),
    "A": ("A", 1.0),
    "V": ("V", 1.0),
    "Percent": ("%", 1.0),
    "Celsius": ("C", 1.0),
    "Celcius": ("C", 1.0),  # the 1.6 schema's spelling
    "Hz": ("Hz", 1.0),
}
_CANONICAL: Mapping[Measurand, str] = {
    Measurand.ENERGY_IMPORT_WH: "Wh",
    Measurand.ENERGY_EXPORT_WH: "Wh",
    Measurand.POWER_IMPORT_W: "W",
    Measurand.POWER_EXPORT_W: "W",
    Measurand.POWER_OFFERED_W: "W",
    Measurand.CURRENT_IMPORT_A: "A",
    Measurand.CURRENT_EXPORT_A: "A",
    Measurand.CURRENT_OFFERED_A: "A",
    Measurand.VOLTAGE_V: "V",
    Measurand.SOC_PCT: "%",
    Measurand.TEMPERATURE_C: "C",
    Measurand.FREQUENCY_HZ: "Hz",
}
_PHASES: Mapping[str, Phase] = {
    "L1": Phase.L1,
    "L2": Phase.L2,
    "L3": Phase.L3,
    "N": Phase.N,
    "L1-N": Phase.L1,
    "L2-N": Phase.L2,
    "L3-N": Phase.L3,
}


def _unit_of(sv: Mapping[str, Any]) -> tuple[str | None, float]:
    """Unit name and power-of-ten multiplier of a sampled value (either version)."""
    uom = sv.get("unit_of_measure")
    if isinstance(uom, Mapping):
        multiplier = uom.get("multiplier", 0)
        factor = 10.0**multiplier if isinstance(multiplier, int) else 1.0
        unit = uom.get("unit")
        return (unit if isinstance(unit, str) else None), factor
    unit = sv.get("unit")
    return (unit if isinstance(unit, str) else None), 1.0


def _reading(sv: Mapping[str, Any], ts: int) -> Reading | None:
    """One sampled value as a reading, or None if it is not one we keep or cannot be read."""
    if sv.get("format") == "SignedData" or ("signed_meter_value" in sv and "value" not in sv):
        return None
    name = sv.get("measurand", "Energy.Active.Import.Register")
    measurand = _MEASURANDS.get(name) if isinstance(name, str) else None
    if measurand is None:
        return None
    raw = sv.get("value")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        logger.debug("skipping sampled value %r of %s: not a number", raw, name)
        return None
    if not math.isfinite(value):
        return None
    unit, multiplier = _unit_of(sv)
    expected = _CANONICAL[measurand]
    if unit is None:
        factor = 1.0  # each measurand's default unit is its canonical one
    elif unit in _UNITS and _UNITS[unit][0] == expected:
        factor = _UNITS[unit][1]
    else:
        logger.debug("skipping %s in unit %r: expected %s", name, unit, expected)
        return None
    phase_name = sv.get("phase")
    if phase_name is None:
        phase = Phase.NONE
    elif isinstance(phase_name, str) and phase_name in _PHASES:
        phase = _PHASES[phase_name]
    else:
        return None  # line-to-line values (L1-L2 ...) are not kept
    return Reading(ts, measurand, phase, value * factor * multiplier)


def parse_meter_values(
    meter_values: Iterable[Any] | None,
    *,
    now: datetime,
    nominal_voltage_v: float = 230.0,
) -> tuple[tuple[Reading, ...], MeterSummary | None]:
    """Readings of a ``meterValue`` list (snake_case keys, either version) and its summary.

    Parameters
    ----------
    meter_values : iterable of mappings
        Each with ``timestamp`` and ``sampled_value`` (a list).
    now : datetime
        Used for unreadable timestamps.
    nominal_voltage_v : float
        Voltage for power derived from currents when no voltage is reported [V].

    Returns
    -------
    (tuple of Reading, MeterSummary or None)
        The summary describes the latest timestamp that has any reading.

    Examples
    --------
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> mv = [{"timestamp": "2026-01-01T10:00:00Z", "sampled_value": [
    ...     {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
    ...     {"value": "16", "measurand": "Current.Import", "phase": "L1-N", "unit": "A"},
    ...     {"value": "16", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
    ...     {"value": "0.2", "measurand": "Current.Import", "phase": "N", "unit": "A"},
    ...     {"value": "n/a", "measurand": "SoC"}]}]
    >>> readings, summary = parse_meter_values(mv, now=now)
    >>> len(readings), summary.energy_wh, summary.power_w, summary.power_derived
    (4, 12500.0, 7360.0, True)
    """
    readings: list[Reading] = []
    for mv in meter_values or ():
        if not isinstance(mv, Mapping):
            continue
        ts = int(parse_time(mv.get("timestamp"), default=now).timestamp())
        for sv in mv.get("sampled_value") or ():  # each checked: stations send anything
            if isinstance(sv, Mapping) and (r := _reading(sv, ts)) is not None:
                readings.append(r)
    if not readings:
        return (), None
    return tuple(readings), _summary(readings, nominal_voltage_v)


def _summary(readings: Sequence[Reading], nominal_voltage_v: float) -> MeterSummary:
    ts = max(r.ts for r in readings)
    latest = [r for r in readings if r.ts == ts]

    def total(m: Measurand) -> float | None:
        values = [r.value for r in latest if r.measurand is m and r.phase is Phase.NONE]
        return values[-1] if values else None

    def per_phase(m: Measurand) -> dict[Phase, float]:
        return {
            r.phase: r.value
            for r in latest
            if r.measurand is m and r.phase in (Phase.L1, Phase.L2, Phase.L3)
        }

    power, derived = total(Measurand.POWER_IMPORT_W), False
    if power is None and (phase_power := per_phase(Measurand.POWER_IMPORT_W)):
        power, derived = sum(phase_power.values()), True
    if power is None and (currents := per_phase(Measurand.CURRENT_IMPORT_A)):
        volts = per_phase(Measurand.VOLTAGE_V)
        fallback = total(Measurand.VOLTAGE_V) or nominal_voltage_v
        power = sum(i * volts.get(p, fallback) for p, i in currents.items())
        derived = True
    return MeterSummary(
        ts=ts,
        power_w=power,
        energy_wh=total(Measurand.ENERGY_IMPORT_WH),
        soc_pct=total(Measurand.SOC_PCT),
        power_derived=derived,
    )
