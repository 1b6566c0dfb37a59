"""Version-neutral charging profiles and composite schedules, between the sink and the versions.

The sink decides *what* a station should enforce (:class:`ProfileSpec`); :mod:`.v16` and
:mod:`.v201` turn a spec into that version's SetChargingProfile and read a GetCompositeSchedule
answer back into a :class:`CompositeLimit`. Profile ids are fixed per purpose and connector, so a
re-sent profile replaces the one before it (same ``chargingProfileId``, K01.FR.05) instead of
piling up on the station.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ampflow.engine.units import kw_from_a

__all__ = [
    "CompositeLimit",
    "ProfilePurpose",
    "ProfileSpec",
    "limit_in_force",
    "profile_id",
]


class ProfilePurpose(StrEnum):
    """What a profile is for; each version names them (1.6 / 2.0.1)."""

    STATION_MAX = "station_max"  # ChargePointMaxProfile / ChargingStationMaxProfile, connector 0
    TX_DEFAULT = "tx_default"  # TxDefaultProfile
    TX = "tx"  # TxProfile, for one running transaction


_BASE_ID = {ProfilePurpose.STATION_MAX: 1, ProfilePurpose.TX_DEFAULT: 100, ProfilePurpose.TX: 1000}


def profile_id(purpose: ProfilePurpose, connector: int) -> int:
    """The fixed ``chargingProfileId`` of a purpose on a connector (0: the station).

    Examples
    --------
    >>> profile_id(ProfilePurpose.TX, 2), profile_id(ProfilePurpose.STATION_MAX, 0)
    (1002, 1)
    """
    return _BASE_ID[purpose] + connector


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A profile to install on one connector (0: the station).

    ``schedule`` is the camelCase ``ChargingSchedule`` from
    :func:`ampflow.engine.profiles.charging_schedule` (with ``id`` for 2.0.1).
    """

    connector: int
    purpose: ProfilePurpose
    stack_level: int
    schedule: dict[str, Any]
    transaction_id: str | None = None
    kind: str = "Absolute"

    @property
    def profile_id(self) -> int:
        return profile_id(self.purpose, self.connector)

    @property
    def first_limit(self) -> float:
        """The limit of the first period, in the schedule's unit."""
        return float(self.schedule["chargingSchedulePeriod"][0]["limit"])


@dataclass(frozen=True, slots=True)
class CompositeLimit:
    """The limit a station reports in force now (from GetCompositeSchedule)."""

    limit: float
    unit: str
    number_phases: int | None

    def kw(self, *, voltage_v: float, phases: int, power_factor: float = 1.0) -> float:
        """The limit as power [kW]."""
        if self.unit == "W":
            return self.limit / 1000.0
        n = self.number_phases or phases
        return float(
            kw_from_a(self.limit, voltage_v=voltage_v, phases=n, power_factor=power_factor)
        )


def limit_in_force(
    periods: list[dict[str, Any]], *, start: datetime | None, now: datetime, unit: str
) -> CompositeLimit | None:
    """The period of a (snake_case) schedule in force at ``now``.

    Examples
    --------
    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    >>> periods = [{"start_period": 0, "limit": 16.0}, {"start_period": 600, "limit": 8.0}]
    >>> limit_in_force(periods, start=t0, now=t0.replace(minute=15), unit="A")
    CompositeLimit(limit=8.0, unit='A', number_phases=None)
    """
    if not periods:
        return None
    offset = 0.0 if start is None else (now - start).total_seconds()
    chosen = periods[0]
    for p in sorted(periods, key=lambda p: float(p.get("start_period", 0))):
        if float(p.get("start_period", 0)) <= offset:
            chosen = p
    phases = chosen.get("number_phases")
    return CompositeLimit(
        float(chosen["limit"]), unit, int(phases) if isinstance(phases, int) else None
    )
