"""What a station can do for smart charging, and what its model is known to get wrong.

Capabilities are read from the station after it connects (1.6 ``GetConfiguration``, 2.0.1
``GetVariables`` on ``SmartChargingCtrlr``), stored on the station's row, and honoured when a
profile is built: the rate unit (A or W), the number of periods, the stack level, and whether
smart charging works at all.

Quirks
------
Some behaviour cannot be read from a station. :data:`QUIRK_TABLE` lists what public issue trackers
report for some models (see ``shared/reference/ocpp.md``); an operator adds more per station
through the API (``PATCH /stations/{id}`` with ``quirks``). Each quirk changes what is sent:

===========================  =====================================================================
``w_only`` / ``a_only``      schedules in that unit only, whatever the station reports
``ignores_number_phases``    ``numberPhases`` is left out of schedule periods
``rejects_station_max``      no ChargePointMaxProfile / ChargingStationMaxProfile; TxDefault only
``profile_lost_on_reconnect`` after a reconnect, the station is assumed to run at its maximum
                             until the re-sent profile is accepted
``no_composite_schedule``    verification by meter values only
``no_smart_charging``        no profiles at all; the station is treated as uncontrollable load
===========================  =====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "QUIRK_TABLE",
    "Capabilities",
    "Quirk",
    "capabilities_from_v16",
    "capabilities_from_v201",
    "choose_unit",
    "quirks_for",
]


class Quirk(StrEnum):
    """A known deviation of a station from the specification (see the module notes)."""

    W_ONLY = "w_only"
    A_ONLY = "a_only"
    IGNORES_NUMBER_PHASES = "ignores_number_phases"
    REJECTS_STATION_MAX = "rejects_station_max"
    PROFILE_LOST_ON_RECONNECT = "profile_lost_on_reconnect"
    NO_COMPOSITE_SCHEDULE = "no_composite_schedule"
    NO_SMART_CHARGING = "no_smart_charging"


@dataclass(frozen=True, slots=True)
class QuirkRule:
    """Quirks of the stations whose vendor and model match (case-insensitive regexes)."""

    vendor: str
    model: str
    quirks: frozenset[Quirk]
    source: str


QUIRK_TABLE: tuple[QuirkRule, ...] = (
    QuirkRule(
        r"go-?e",
        r".*",
        frozenset({Quirk.IGNORES_NUMBER_PHASES, Quirk.PROFILE_LOST_ON_RECONNECT}),
        "goecharger/go-eCharger-API-v2#154 (numberPhases ignored), #217 (profile lost after a "
        "websocket reconnect)",
    ),
    QuirkRule(
        r"ev-?box",
        r".*",
        frozenset({Quirk.REJECTS_STATION_MAX}),
        "lbbrhzn/ocpp#221: ChargePointMaxProfile rejected, TxDefaultProfile honoured",
    ),
)


def quirks_for(
    vendor: str | None, model: str | None, stored: Iterable[str] = ()
) -> frozenset[Quirk]:
    """The quirks of a station: the table's for its vendor and model, plus the stored ones.

    Unknown stored names are ignored (they may come from a newer version).

    Examples
    --------
    >>> sorted(quirks_for("go-e GmbH", "Gemini", ["w_only", "unheard_of"]))
    [<Quirk.IGNORES_NUMBER_PHASES: 'ignores_number_phases'>,
     <Quirk.PROFILE_LOST_ON_RECONNECT: 'profile_lost_on_reconnect'>, <Quirk.W_ONLY: 'w_only'>]
    """
    out = {Quirk(q) for q in stored if q in Quirk._value2member_map_}
    for rule in QUIRK_TABLE:
        if (
            vendor is not None
            and model is not None
            and re.search(rule.vendor, vendor, re.IGNORECASE)
            and re.search(rule.model, model, re.IGNORECASE)
        ):
            out |= rule.quirks
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Smart-charging capabilities as read from a station (``None``: not reported).

    Attributes
    ----------
    rate_units : frozenset of {'A', 'W'}
        Units the station accepts in schedules (empty: not reported).
    max_periods : int or None
        ``ChargingScheduleMaxPeriods`` (1.6) / ``PeriodsPerSchedule`` (2.0.1).
    max_stack_level : int or None
        ``ChargeProfileMaxStackLevel`` / ``ProfileStackLevel``.
    smart_charging : bool or None
        The SmartCharging feature profile (1.6) / ``SmartChargingCtrlr.Enabled`` (2.0.1).
    """

    rate_units: frozenset[str] = frozenset()
    max_periods: int | None = None
    max_stack_level: int | None = None
    smart_charging: bool | None = None

    @property
    def rate_units_text(self) -> str | None:
        """As stored on the station's row: ``"A"``, ``"W"`` or ``"A,W"``."""
        return ",".join(sorted(self.rate_units)) or None

    @classmethod
    def from_row(
        cls,
        rate_units: str | None,
        max_periods: int | None,
        max_stack_level: int | None,
        smart_charging: bool | None,
    ) -> Capabilities:
        units = frozenset(u for u in (rate_units or "").split(",") if u in ("A", "W"))
        return cls(units, max_periods, max_stack_level, smart_charging)


def choose_unit(caps: Capabilities, quirks: Iterable[Quirk]) -> str:
    """The unit to send schedules in: quirks first, then what the station accepts, A by default.

    Examples
    --------
    >>> choose_unit(Capabilities(frozenset({"W"})), [])
    'W'
    >>> choose_unit(Capabilities(frozenset({"A", "W"})), [Quirk.W_ONLY])
    'W'
    >>> choose_unit(Capabilities(), [])
    'A'
    """
    q = set(quirks)
    if Quirk.W_ONLY in q:
        return "W"
    if Quirk.A_ONLY in q:
        return "A"
    if caps.rate_units == frozenset({"W"}):
        return "W"
    return "A"


def _int(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _units(text: str) -> frozenset[str]:
    """Units in a 1.6 ``Current,Power`` or 2.0.1 ``A,W`` list."""
    names = {"current": "A", "power": "W", "a": "A", "w": "W"}
    return frozenset(names[x] for x in re.split(r"[,\s]+", text.lower()) if x in names)


def capabilities_from_v16(keys: Iterable[Mapping[str, Any]]) -> Capabilities:
    """Capabilities from a 1.6 GetConfiguration ``configurationKey`` list (snake_case).

    Examples
    --------
    >>> capabilities_from_v16([
    ...     {"key": "ChargingScheduleAllowedChargingRateUnit", "value": "Power"},
    ...     {"key": "ChargingScheduleMaxPeriods", "value": "24"},
    ...     {"key": "SupportedFeatureProfiles", "value": "Core,SmartCharging"}])
    Capabilities(rate_units=frozenset({'W'}), max_periods=24, max_stack_level=None,
                 smart_charging=True)
    """
    values = {
        str(k.get("key")): str(k.get("value"))
        for k in keys
        if isinstance(k, Mapping) and k.get("value") is not None
    }
    features = values.get("SupportedFeatureProfiles")
    return Capabilities(
        rate_units=_units(values.get("ChargingScheduleAllowedChargingRateUnit", "")),
        max_periods=_int(values.get("ChargingScheduleMaxPeriods")),
        max_stack_level=_int(values.get("ChargeProfileMaxStackLevel")),
        smart_charging=None if features is None else "smartcharging" in features.lower(),
    )


V201_VARIABLES: tuple[tuple[str, str], ...] = (
    ("SmartChargingCtrlr", "Enabled"),
    ("SmartChargingCtrlr", "RateUnit"),
    ("SmartChargingCtrlr", "PeriodsPerSchedule"),
    ("SmartChargingCtrlr", "ProfileStackLevel"),
)


def capabilities_from_v201(results: Iterable[Mapping[str, Any]]) -> Capabilities:
    """Capabilities from a 2.0.1 GetVariables ``getVariableResult`` list (snake_case).

    Examples
    --------
    >>> caps = capabilities_from_v201([
    ...     {"attribute_status": "Accepted", "component": {"name": "SmartChargingCtrlr"},
    ...      "variable": {"name": "Enabled"}, "attribute_value": "true"},
    ...     {"attribute_status": "Accepted", "component": {"name": "SmartChargingCtrlr"},
    ...      "variable": {"name": "RateUnit"}, "attribute_value": "A,W"},
    ...     {"attribute_status": "UnknownVariable", "component": {"name": "SmartChargingCtrlr"},
    ...      "variable": {"name": "PeriodsPerSchedule"}}])
    >>> sorted(caps.rate_units), caps.max_periods, caps.smart_charging
    (['A', 'W'], None, True)
    """
    values: dict[str, str] = {}
    for r in results:
        if not isinstance(r, Mapping) or r.get("attribute_status") != "Accepted":
            continue
        variable = r.get("variable")
        if isinstance(variable, Mapping) and r.get("attribute_value") is not None:
            values[str(variable.get("name"))] = str(r.get("attribute_value"))
    enabled = values.get("Enabled")
    return Capabilities(
        rate_units=_units(values.get("RateUnit", "")),
        max_periods=_int(values.get("PeriodsPerSchedule")),
        max_stack_level=_int(values.get("ProfileStackLevel")),
        smart_charging=None if enabled is None else enabled.strip().lower() == "true",
    )
