"""What both VENs do with an event: map it per site, store it, wake the control loop, answer.

:class:`EventProcessor` is protocol-neutral: the 2.0b and 3.x VENs parse their messages into
:class:`~ampflow.gateway.openadr.mapping.OadrEvent` and call :meth:`EventProcessor.handle`, which
returns the answer (opt in or out, with the reason). The rules:

* a cancelled event cancels its stored signals (its caps are lifted at once);
* a test event is acknowledged and stores nothing;
* a bad event (unknown signal, missing intervals, absurd units, a negative cap) is logged with
  its reason and opted out of, and nothing stored changes: an earlier valid version of the
  event keeps its cap;
* an event whose cap a site cannot honour (below its uncontrollable load) is opted out of; its
  caps are not stored (prices are);
* a site the manager opted out (in the VEN's configuration, or by setting the stored event's
  opt state) gets the event recorded without a cap, and the answer is an opt-out;
* otherwise the signals are stored, the answer is an opt-in.

After any change the control loop is notified: it re-plans at once (so the hours before the
event can pre-charge), and it is woken again at every instant a cap of the event begins or
changes (within two days), so its limits follow the caps from their start, not a tick later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from ampflow.gateway.db import Database
from ampflow.gateway.db.base import SignalSource, utcnow
from ampflow.gateway.db.errors import StoreError
from ampflow.gateway.openadr import store
from ampflow.gateway.openadr.config import Protocol, SiteBinding, VenConfig
from ampflow.gateway.openadr.mapping import (
    BadEventError,
    CannotHonourError,
    MappedSignal,
    OadrEvent,
    SiteLimits,
    map_event,
    split_cap_kw,
)

__all__ = ["Answer", "EventProcessor", "Opt"]

logger = logging.getLogger(__name__)

_EDGE_HORIZON_S = 48 * 3600.0


class Opt(StrEnum):
    """The answer to an event, spelled as in OpenADR 2.0b."""

    IN = "optIn"
    OUT = "optOut"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the VEN answers and why; ``changed`` says whether the store changed."""

    event_id: str
    opt: Opt
    reason: str = ""
    changed: bool = False
    edges: tuple[datetime, ...] = ()  # when the event's caps begin or change


class EventProcessor:
    """Turns one VEN's events into stored signals; see the module notes.

    Parameters
    ----------
    db : Database
    config : VenConfig
    source : SignalSource
        ``openadr2`` or ``openadr3``.
    notify : callable
        Wakes the control loop (``ControlLoop.notify``); called with a reason.
    clock : callable, optional
    """

    def __init__(
        self,
        db: Database,
        config: VenConfig,
        *,
        source: SignalSource,
        notify: Callable[[str], None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.config = config
        self.source = source
        self.notify = notify
        self.clock = clock
        self.answers: dict[str, Answer] = {}  # the latest answer per event id
        self.rejected = 0
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}

    def close(self) -> None:
        """Drop the wake-ups scheduled at events' edges."""
        for handles in self._timers.values():
            for h in handles:
                h.cancel()
        self._timers.clear()

    def _wake_at_edges(self, event_id: str, edges: tuple[datetime, ...]) -> None:
        """Wake the control loop when a cap of the event begins or changes (within the next
        two days; later edges are met by the loop's own ticks and re-plans)."""
        for h in self._timers.pop(event_id, []):
            h.cancel()
        loop = asyncio.get_running_loop()
        now = self.clock()
        reason = f"OpenADR {self.config.name}: event {event_id} begins or changes"
        handles = [
            loop.call_later(delay, self.notify, reason)
            for edge in sorted(set(edges))
            if 0 < (delay := (edge - now).total_seconds()) <= _EDGE_HORIZON_S
        ]
        if handles:
            self._timers[event_id] = handles

    # -- events -----------------------------------------------------------------------------

    async def handle(self, event: OadrEvent) -> Answer:
        """Map, store and answer one event (never raises for a bad event)."""
        answer = await asyncio.to_thread(self._handle, event)
        self.answers[event.event_id] = answer
        if answer.changed:
            self.notify(f"OpenADR {self.config.name}: event {event.event_id}")
            self._wake_at_edges(event.event_id, answer.edges)
        return answer

    async def reject(self, event_id: str, reason: str) -> Answer:
        """Record a rejection the VEN found before mapping (e.g. a message that does not
        validate): logged, opted out of, nothing stored changes."""
        self.rejected += 1
        logger.warning("VEN %s: rejected event %r: %s", self.config.name, event_id, reason)
        answer = Answer(event_id, Opt.OUT, reason)
        self.answers[event_id] = answer
        return answer

    async def cancel(self, event_id: str, reason: str = "cancelled") -> bool:
        """Cancel an event's stored signals; whether any was active."""
        changed = await asyncio.to_thread(self._cancel, event_id)
        self._wake_at_edges(event_id, ())
        if changed:
            logger.info(
                "VEN %s: event %r %s; its caps are lifted", self.config.name, event_id, reason
            )
            self.notify(f"OpenADR {self.config.name}: event {event_id} {reason}")
        return changed

    async def cancel_missing(
        self, present: set[str], *, before: datetime | None = None
    ) -> list[str]:
        """Cancel stored events the VTN no longer lists (``present``: the ids it does list).

        With ``before``, only events stored before then count (the listing started then).
        """
        dropped = await asyncio.to_thread(self._cancel_missing, present, before)
        for eid in [e for e in self._timers if store.event_prefix(self.config.name, e) in dropped]:
            self._wake_at_edges(eid, ())
        if dropped:
            self.notify(f"OpenADR {self.config.name}: {len(dropped)} event(s) withdrawn")
        return dropped

    def _cancel(self, event_id: str) -> bool:
        with self.db.write() as s:
            return store.cancel_event(
                s, source=self.source, ven=self.config.name, event_id=event_id
            )

    def _cancel_missing(self, present: set[str], before: datetime | None) -> list[str]:
        keep = {store.event_prefix(self.config.name, e) for e in present}
        with self.db.write() as s:
            known = store.known_events(
                s, source=self.source, ven=self.config.name, now=self.clock(), before=before
            )
            dropped = [prefix for prefix in known if prefix not in keep]
            for prefix in dropped:
                store.cancel_signals(s, known[prefix])
        for prefix in dropped:
            logger.info("VEN %s: the VTN no longer lists %s; cancelled", self.config.name, prefix)
        return dropped

    def _handle(self, event: OadrEvent) -> Answer:
        name = self.config.name
        if event.cancelled:
            changed = self._cancel(event.event_id)
            return Answer(event.event_id, Opt.IN, "cancelled", changed, edges=())
        if event.test:
            logger.info("VEN %s: test event %r acknowledged", name, event.event_id)
            return Answer(event.event_id, Opt.IN, "test event")
        if self.config.protocol is Protocol.V2_0B and self.config.program not in (
            None,
            event.program,
        ):
            return self._bad(
                event, f"market context {event.program!r}: expected {self.config.program!r}"
            )
        if event.ignored:
            logger.info(
                "VEN %s: event %r: ignoring %s", name, event.event_id, ", ".join(event.ignored)
            )
        if not event.signals:
            return self._bad(event, "no signal Ampflow acts on")
        bindings = self._targets(event)
        with self.db.read() as s:
            limits = store.site_limits(s, [b.site_id for b in bindings])
            manager_out = store.opted_out_sites(s, self.source, name, event.event_id)
        missing = [b.site_id for b in bindings if b.site_id not in limits]
        if missing:
            logger.error("VEN %s: configured site(s) %s do not exist", name, missing)
        bindings = [b for b in bindings if b.site_id in limits]
        if not bindings:
            return self._bad(event, f"none of the event's sites exist ({missing})")
        try:
            per_site, cannot = self._map(event, bindings, limits)
        except BadEventError as exc:
            return self._bad(event, str(exc))
        opted = {b.site_id for b in bindings if b.opted_out} | manager_out
        if cannot:
            per_site = {k: [m for m in v if m.kind.is_price] for k, v in per_site.items()}
        try:
            with self.db.write() as s:
                changed = store.store_event(
                    s,
                    source=self.source,
                    ven=name,
                    event_id=event.event_id,
                    per_site=per_site,
                    modification=event.modification
                    if self.source is SignalSource.OPENADR2
                    else None,
                    priority=event.priority,
                    program=event.program,
                    opt_out_sites=opted,
                )
        except StoreError as exc:
            return self._bad(event, f"the store refused it: {exc}")
        edges = tuple(
            t
            for signals in per_site.values()
            for m in signals
            if not m.kind.is_price
            for iv in m.intervals
            for t in (iv.start, iv.end)
        )
        return replace(self._answer(event, changed, cannot, opted), edges=edges)

    def _answer(self, event: OadrEvent, changed: bool, cannot: str, opted: set[str]) -> Answer:
        name = self.config.name
        has_cap = any(not s.role.is_price for s in event.signals)
        if cannot:
            logger.warning("VEN %s: opting out of event %r: %s", name, event.event_id, cannot)
            return Answer(event.event_id, Opt.OUT, cannot, changed)
        if opted and has_cap:
            reason = f"site(s) {sorted(opted)} opted out by the site manager"
            logger.info("VEN %s: opting out of event %r: %s", name, event.event_id, reason)
            return Answer(event.event_id, Opt.OUT, reason, changed)
        logger.info(
            "VEN %s: event %r (modification %d) %s",
            name,
            event.event_id,
            event.modification,
            "stored" if changed else "unchanged",
        )
        return Answer(event.event_id, Opt.IN, "", changed)

    def _bad(self, event: OadrEvent, reason: str) -> Answer:
        self.rejected += 1
        logger.warning(
            "VEN %s: rejected event %r: %s; opting out, stored caps unchanged",
            self.config.name,
            event.event_id,
            reason,
        )
        return Answer(event.event_id, Opt.OUT, reason)

    def _targets(self, event: OadrEvent) -> list[SiteBinding]:
        named = [b for b in self.config.sites if b.resource in event.targets]
        return named or list(self.config.sites)

    def _map(
        self,
        event: OadrEvent,
        bindings: Sequence[SiteBinding],
        limits: dict[str, SiteLimits],
    ) -> tuple[dict[str, list[MappedSignal]], str]:
        rules = self.config.rules_for(event.program)
        shares = split_cap_kw(1.0, [limits[b.site_id].import_kw for b in bindings])
        per_site: dict[str, list[MappedSignal]] = {}
        cannot = ""
        for b, share in zip(bindings, shares, strict=True):
            site = limits[b.site_id]
            key = f"{self.config.name}/{b.site_id}/{event.event_id}"
            try:
                per_site[b.site_id] = list(
                    map_event(event, site, rules=rules, share=share, key=key)
                )
            except CannotHonourError as exc:
                cannot = cannot or str(exc)
                prices = [s for s in event.signals if s.role.is_price]
                per_site[b.site_id] = list(
                    map_event(OadrEvent(event.event_id, signals=tuple(prices)), site, rules=rules)
                )
        return per_site, cannot
