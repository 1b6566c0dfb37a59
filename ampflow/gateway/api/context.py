"""What every request can reach: settings, the database, the key cache, the control loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ampflow.gateway.api.auth import KeyCache
from ampflow.gateway.db import Database
from ampflow.gateway.settings import Settings

if TYPE_CHECKING:
    from ampflow.gateway.control import ControlLoop, StationCommands

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """Shared state of one app instance (``app.state.ctx``)."""

    settings: Settings
    db: Database
    keys: KeyCache
    commands: StationCommands
    control: ControlLoop | None = None

    def notify(self, reason: str) -> None:
        """Wake the control loop now: capacity, a DR event or a target changed."""
        if self.control is not None:
            self.control.notify(reason)
