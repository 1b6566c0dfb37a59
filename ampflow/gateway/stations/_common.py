"""What the 1.6 and 2.0.1 adapters share: the station they serve, typed ``@on``, timestamps."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar, cast

from ocpp.routing import on as _on

from ampflow.gateway.stations.core import ConnectorStatus, StationCore
from ampflow.gateway.stations.profiles import Profile, Purpose, Rejection

__all__ = [
    "MEASURANDS",
    "EndedTx",
    "StationHost",
    "StationLink",
    "StopReason",
    "floor_tenth",
    "iso",
    "on",
    "parse_ts",
]

F = TypeVar("F", bound=Callable[..., Any])

# What every meter value carries (and GetConfiguration reports as MeterValuesSampledData).
MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Current.Offered",
    "Power.Offered",
    "SoC",
)


def on(action: str) -> Callable[[F], F]:
    """``ocpp.routing.on``, typed."""
    return cast(Callable[[F], F], _on(action))


def iso(t: datetime) -> str:
    """An OCPP timestamp: UTC, milliseconds, ``Z``."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(value: object, *, field: str) -> datetime | None:
    """A timestamp from a message (None stays None). Raises ValueError naming ``field``."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{field}: expected an ISO 8601 date-time, got {value!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def floor_tenth(x: float) -> float:
    """``x`` rounded down to a multiple of 0.1 (the 1.6 schema's ``multipleOf``)."""
    return math.floor(x * 10.0 + 1e-6) / 10.0


class StopReason(StrEnum):
    """Why a transaction ended (1.6 names; 2.0.1 maps them)."""

    EV_DISCONNECTED = "EVDisconnected"
    REMOTE = "Remote"
    SOFT_RESET = "SoftReset"
    HARD_RESET = "HardReset"
    DEAUTHORIZED = "DeAuthorized"
    LOCAL = "Local"


@dataclass(frozen=True, slots=True)
class EndedTx:
    """A transaction that ended, as it must be reported."""

    connector: int
    transaction_id: str
    meter_stop_wh: float
    id_tag: str | None
    reason: StopReason
    at: datetime
    seq_no: int


class StationLink(Protocol):
    """One connection of a station to its central system, in its OCPP version."""

    async def start(self) -> None:
        """Receive and route messages until the connection closes."""

    async def boot(self, reason: str) -> tuple[str, float]:
        """BootNotification; returns the registration status and interval [s]."""

    async def heartbeat(self) -> None:
        """Heartbeat."""

    async def status(self, connector: int) -> None:
        """StatusNotification of a connector (0: the station, 1.6 only)."""

    async def authorize(self, id_tag: str) -> bool:
        """Authorize; whether the token is accepted."""

    async def start_tx(self, connector: int, *, remote_id: int | None) -> bool:
        """Start a transaction on ``connector`` (the core is updated); whether it may run."""

    async def stop_tx(self, ended: EndedTx) -> None:
        """Report an ended transaction."""

    async def meter(self, connector: int) -> None:
        """Periodic meter values of a connector."""

    async def status_changed(
        self, connector: int, old: ConnectorStatus, new: ConnectorStatus
    ) -> None:
        """Report a connector's change of status (and 2.0.1 charging state)."""


class StationHost(Protocol):
    """What an adapter needs from the station it speaks for."""

    core: StationCore

    def now(self) -> datetime:
        """Station time (UTC)."""

    def apply_profile(self, p: Profile, *, strict: bool) -> Rejection | None:
        """Validate and install ``p``; None when accepted."""

    def clear_profiles(
        self,
        *,
        profile_id: int | None,
        connector: int | None,
        purpose: Purpose | None,
        stack_level: int | None,
    ) -> int:
        """Clear matching profiles; how many."""

    def remote_start(
        self, connector: int | None, id_tag: str, profile: Profile | None, *, remote_id: int | None
    ) -> bool:
        """RemoteStart / RequestStart; whether accepted."""

    def remote_stop(self, transaction_id: str) -> bool:
        """RemoteStop / RequestStop; whether accepted."""

    def post(
        self, label: str, fn: Callable[[Any], Awaitable[None]], *, persistent: bool = False
    ) -> None:
        """Send something after the current handler returns (never from inside it)."""

    def handling(self, busy: bool) -> None:
        """A call is being handled (``busy``), or its reply went out."""

    def flush_posted(self) -> None:
        """Release what handlers posted (their replies have been sent)."""

    def request_reset(self, *, hard: bool, when_idle: bool = False) -> None:
        """Reboot after the reply is sent (or once no transaction runs, if ``when_idle``)."""

    def wake(self) -> None:
        """Re-run the station's step now (a setting changed)."""
