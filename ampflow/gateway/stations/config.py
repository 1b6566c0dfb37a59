"""What a simulated charge point is: its identity, protocol, electrics, limits and quirks.

A :class:`StationConfig` is everything a simulated station needs before it connects. Its smart
charging capabilities (rate units, periods per schedule, stack levels, profiles installed) are
what the station reports through GetConfiguration (1.6) or GetVariables (2.0.1), and what it
enforces when it accepts or rejects a profile.

Examples
--------
>>> cfg = StationConfig("CP-1", max_kw=11.0, phases=3, quirks=frozenset({Quirk.W_ONLY}))
>>> cfg.rate_units
('W',)
>>> round(cfg.max_a, 1)
15.9
>>> StationConfig("CP-1", max_kw=-1)
Traceback (most recent call last):
...
ampflow.gateway.stations.config.StationConfigError: station 'CP-1': max_kw must be > 0, got -1
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from ampflow.engine.errors import AmpflowError

__all__ = ["OcppVersion", "Quirk", "StationConfig", "StationConfigError"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:*+|@-]{0,47}$")


class StationConfigError(AmpflowError):
    """A simulated station's configuration is invalid (names the field, value, expectation)."""


class OcppVersion(StrEnum):
    """The OCPP version a station speaks (and the WebSocket subprotocol it asks for)."""

    V16 = "1.6"
    V201 = "2.0.1"

    @property
    def subprotocol(self) -> str:
        """The WebSocket subprotocol: ``ocpp1.6`` or ``ocpp2.0.1``."""
        return f"ocpp{self.value}"


class Quirk(StrEnum):
    """Ways real chargers deviate from the book (see ``shared/reference/ocpp.md``).

    ``w_only``
        Accepts only profiles in W (rate unit ``Power``); profiles in A are rejected.
    ``ignores_number_phases``
        Applies an A limit to every phase it has, whatever ``numberPhases`` says.
    ``no_smart_charging``
        Has no smart-charging feature profile: charging-profile calls get a NotSupported error.
    ``volatile_profiles``
        Forgets every charging profile on a reboot or a reconnect (go-e firmware 56.2).
    """

    W_ONLY = "w_only"
    IGNORES_NUMBER_PHASES = "ignores_number_phases"
    NO_SMART_CHARGING = "no_smart_charging"
    VOLATILE_PROFILES = "volatile_profiles"


@dataclass(frozen=True, slots=True)
class StationConfig:
    """A simulated charge point.

    Parameters
    ----------
    station_id : str
        OCPP identity, the last part of ``ws://.../ocpp/{station_id}``.
    version : OcppVersion
        Protocol version (1.6 or 2.0.1).
    connectors : int
        Number of connectors (1.6) or EVSEs with one connector each (2.0.1).
    max_kw : float
        Hardware limit of one connector [kW].
    phases : int
        Phases wired to each connector (1 or 3).
    voltage_v : float
        Voltage across the load [V] (line-to-neutral, or line-to-line for 208 V single phase).
    min_a : float
        Minimum current an AC EV charges at [A]; a lower limit pauses charging (IEC 61851).
    station_max_kw : float or None
        Hardware limit of the whole station [kW]; default ``connectors * max_kw``.
    max_periods, max_stack_level, max_profiles : int
        Smart-charging capabilities: periods per schedule, highest stack level, profiles
        installed at once.
    quirks : frozenset of Quirk
        Deviations from the specification to simulate.
    password : str or None
        HTTP Basic password (OCPP security profile 1); the user name is ``station_id``.
    meter_interval_s : float
        Real seconds between periodic meter values.
    heartbeat_s : float or None
        Heartbeat interval [s]; None takes the interval of the BootNotification response.
    vendor, model, firmware : str
        What BootNotification reports.
    reboot_s : float
        Real seconds a reset keeps the station offline.
    """

    station_id: str
    version: OcppVersion = OcppVersion.V16
    connectors: int = 1
    max_kw: float = 11.0
    phases: int = 3
    voltage_v: float = 230.0
    min_a: float = 6.0
    station_max_kw: float | None = None
    max_periods: int = 24
    max_stack_level: int = 8
    max_profiles: int = 16
    quirks: frozenset[Quirk] = field(default_factory=frozenset)
    password: str | None = None
    meter_interval_s: float = 10.0
    heartbeat_s: float | None = None
    vendor: str = "Ampflow"
    model: str = "SimCharger"
    firmware: str = "sim-1.0"
    reboot_s: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.station_id, str) or not _ID.fullmatch(self.station_id):
            raise StationConfigError(
                f"station {self.station_id!r}: station_id must match {_ID.pattern}"
            )
        object.__setattr__(self, "version", self._enum("version", self.version, OcppVersion))
        quirks = frozenset(self._enum("quirks", q, Quirk) for q in self.quirks)
        object.__setattr__(self, "quirks", quirks)
        self._positive("max_kw", self.max_kw)
        self._positive("voltage_v", self.voltage_v)
        self._positive("meter_interval_s", self.meter_interval_s)
        self._positive("reboot_s", self.reboot_s, allow_zero=True)
        self._positive("min_a", self.min_a, allow_zero=True)
        if self.station_max_kw is not None:
            self._positive("station_max_kw", self.station_max_kw)
        if self.heartbeat_s is not None:
            self._positive("heartbeat_s", self.heartbeat_s)
        if self.phases not in (1, 3):
            self._fail("phases", self.phases, "1 or 3")
        if not 1 <= self.connectors <= 16:
            self._fail("connectors", self.connectors, "an integer in [1, 16]")
        for name, low in (("max_periods", 1), ("max_stack_level", 0), ("max_profiles", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                self._fail(name, value, f"an integer >= {low}")
        if self.password is not None and not 16 <= len(self.password) <= 40:
            self._fail("password", "***", "16 to 40 characters (OCPP security profile 1)")

    def _fail(self, name: str, value: object, expected: str) -> None:
        raise StationConfigError(
            f"station {self.station_id!r}: {name} must be {expected}, got {value!r}"
        )

    def _positive(self, name: str, value: float, *, allow_zero: bool = False) -> None:
        ok = isinstance(value, int | float) and (value >= 0 if allow_zero else value > 0)
        if not ok or value != value or value == float("inf"):
            self._fail(name, value, ">= 0" if allow_zero else "> 0")

    def _enum[E: StrEnum](self, name: str, value: object, enum: type[E]) -> E:
        if isinstance(value, enum):
            return value
        try:
            return enum(str(value))
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise StationConfigError(
                f"station {self.station_id!r}: {name} must be one of {choices}, got {value!r}"
            ) from None

    @property
    def rate_units(self) -> tuple[str, ...]:
        """Units accepted in charging schedules, preferred first (``A`` and/or ``W``)."""
        return ("W",) if Quirk.W_ONLY in self.quirks else ("A", "W")

    @property
    def smart_charging(self) -> bool:
        """Whether the station supports smart charging at all."""
        return Quirk.NO_SMART_CHARGING not in self.quirks

    @property
    def max_a(self) -> float:
        """Hardware current limit per phase of one connector [A]."""
        return self.max_kw * 1000.0 / (self.voltage_v * self.phases)

    @property
    def station_limit_kw(self) -> float:
        """Hardware limit of the whole station [kW]."""
        if self.station_max_kw is not None:
            return self.station_max_kw
        return self.connectors * self.max_kw
