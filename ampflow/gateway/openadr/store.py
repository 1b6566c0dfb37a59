"""The VENs' reads and writes: sites' limits, events as signals, opt states, site power.

Each OpenADR event becomes one stored signal per site and mapped signal, in the same table as
API-posted DR events and prices, keyed by ``(source, site, external_id)`` with
``external_id = "<ven>|<event>|<n>"``. 2.0b events carry the VTN's modification number; 3.x
events carry none, so a 3.x event counts as modified when what it maps to changed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import OptState, SignalKind, SignalSource, SignalStatus, utcnow
from ampflow.gateway.db.models import Connector, Signal, Site
from ampflow.gateway.db.repo import signals as signal_repo
from ampflow.gateway.openadr.mapping import MappedSignal, SiteLimits

__all__ = [
    "StoredEvent",
    "cancel_event",
    "cancel_signals",
    "event_prefix",
    "external_id",
    "known_events",
    "opted_out_sites",
    "site_limits",
    "site_power_kw",
    "store_event",
]

_FRESH_S = 120.0  # a connector reading older than this does not count as current power


def event_prefix(ven: str, event_id: str) -> str:
    """The start of the external ids of one VEN's event (long event ids are hashed)."""
    part = event_id if len(event_id) <= 80 else hashlib.sha256(event_id.encode()).hexdigest()[:32]
    return f"{ven}|{part}|"


def external_id(ven: str, event_id: str, n: int) -> str:
    """The stored id of the ``n``-th signal of a VEN's event.

    >>> external_id("utility-a", "ev-1", 0)
    'utility-a|ev-1|0'
    """
    return f"{event_prefix(ven, event_id)}{n}"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """What is stored of an event at one site."""

    site_id: str
    external_ids: tuple[str, ...]
    opted_out: bool
    cancelled: bool


def site_limits(s: DbSession, site_ids: Iterable[str]) -> dict[str, SiteLimits]:
    """The limits of the sites that exist, by id."""
    rows = s.scalars(select(Site).where(Site.id.in_(list(site_ids)))).all()
    return {
        x.id: SiteLimits(x.id, float(x.import_kw), float(x.min_import_kw), float(x.export_kw))
        for x in rows
    }


def _event_rows(s: DbSession, source: SignalSource, prefix: str) -> list[tuple[Signal, str]]:
    q = (
        select(Signal, Site.id)
        .join(Site, Site.pk == Signal.site_pk)
        .where(
            Signal.source == source.value, Signal.external_id.startswith(prefix, autoescape=True)
        )
        .order_by(Signal.pk)
    )
    return [(sig, site_id) for sig, site_id in s.execute(q).all()]


def opted_out_sites(s: DbSession, source: SignalSource, ven: str, event_id: str) -> set[str]:
    """Sites where a cap of this event is stored opted out (by the site manager or config)."""
    return {
        site_id
        for sig, site_id in _event_rows(s, source, event_prefix(ven, event_id))
        if sig.opt_state == OptState.OPT_OUT.value and not SignalKind(sig.kind).is_price
    }


def _same(sig: Signal, m: MappedSignal, priority: int, program: str | None) -> bool:
    if (sig.kind, sig.priority, sig.program, sig.currency) != (
        m.kind.value,
        priority,
        program,
        m.currency,
    ):
        return False
    if len(sig.intervals) != len(m.intervals):
        return False
    return all(
        a.start_at == b.start
        and a.end_at == b.end
        and math.isclose(a.value, b.value, rel_tol=1e-9, abs_tol=1e-9)
        for a, b in zip(sig.intervals, m.intervals, strict=True)
    )


def store_event(
    s: DbSession,
    *,
    source: SignalSource,
    ven: str,
    event_id: str,
    per_site: Mapping[str, Sequence[MappedSignal]],
    modification: int | None,
    priority: int,
    program: str | None,
    opt_out_sites: Iterable[str] = (),
) -> bool:
    """Create or modify the event's signals at each site; cancel ones it no longer has.

    Parameters
    ----------
    per_site : mapping of site id to mapped signals
    modification : int or None
        The VTN's modification number (2.0b); ``None`` (3.x) counts a change of content as a
        modification.
    opt_out_sites : iterable of str
        Sites whose caps are stored opted out (they set no cap); prices always apply.

    Returns
    -------
    bool
        Whether anything changed.
    """
    prefix = event_prefix(ven, event_id)
    existing = {str(sig.external_id): sig for sig, _ in _event_rows(s, source, prefix)}
    opted = set(opt_out_sites)
    changed = False
    keep: set[str] = set()
    for site_id, mapped in per_site.items():
        for n, m in enumerate(mapped):
            ext = f"{prefix}{n}"
            keep.add(ext)
            old = existing.get(ext)
            if modification is not None:
                number = modification
            elif old is None:
                number = 0
            elif _same(old, m, priority, program) and old.status == SignalStatus.ACTIVE:
                number = old.modification_number
            else:
                number = old.modification_number + 1
            sig, did = signal_repo.upsert_external_signal(
                s,
                source=source,
                external_id=ext,
                site_id=site_id,
                kind=m.kind,
                intervals=[
                    signal_repo.IntervalSpec(iv.start, iv.end, iv.value) for iv in m.intervals
                ],
                modification_number=number,
                priority=priority,
                program=program,
                currency=m.currency,
            )
            if did and sig.status == SignalStatus.CANCELLED:  # an event the VTN revived
                sig.status = SignalStatus.ACTIVE.value
                sig.cancelled_at = None
            state = OptState.NONE
            if not m.kind.is_price:
                state = OptState.OPT_OUT if site_id in opted else OptState.OPT_IN
            if sig.opt_state != state.value:
                sig.opt_state = state.value
                did = True
            changed |= did
    for old_ext, old_sig in existing.items():
        if old_ext not in keep and old_sig.status != SignalStatus.CANCELLED:
            signal_repo.cancel_signal(s, old_sig.id)
            changed = True
    s.flush()
    return changed


def cancel_event(s: DbSession, *, source: SignalSource, ven: str, event_id: str) -> bool:
    """Cancel every stored signal of the event; whether any was active."""
    changed = False
    for sig, _ in _event_rows(s, source, event_prefix(ven, event_id)):
        if sig.status != SignalStatus.CANCELLED:
            signal_repo.cancel_signal(s, sig.id)
            changed = True
    return changed


def cancel_signals(s: DbSession, signal_ids: Iterable[str]) -> None:
    """Cancel signals by public id."""
    for sid in signal_ids:
        signal_repo.cancel_signal(s, sid)


def known_events(
    s: DbSession,
    *,
    source: SignalSource,
    ven: str,
    now: datetime,
    before: datetime | None = None,
) -> dict[str, set[str]]:
    """Event-id prefixes of this VEN's active signals that have not ended, with their ids.

    Returns ``{prefix: {signal id, ...}}``; the VEN compares prefixes with the events the VTN
    still lists to find the ones it dropped. With ``before``, only signals last written before
    then.
    """
    q = select(Signal.id, Signal.external_id).where(
        Signal.source == source.value,
        Signal.status == SignalStatus.ACTIVE.value,
        Signal.external_id.startswith(f"{ven}|", autoescape=True),
        Signal.end_at > now,
    )
    if before is not None:
        q = q.where(Signal.updated_at < before)
    rows = s.execute(q).all()
    out: dict[str, set[str]] = {}
    for sid, ext in rows:
        if ext is None:
            continue
        out.setdefault(ext.rsplit("|", 1)[0] + "|", set()).add(sid)
    return out


def site_power_kw(s: DbSession, site_id: str, *, now: datetime | None = None) -> float:
    """The site's charging power now [kW]: the sum of its connectors' fresh readings.

    Connectors without a reading in the last two minutes count as 0.
    """
    since = (now or utcnow()) - timedelta(seconds=_FRESH_S)
    total = s.scalar(
        select(func.coalesce(func.sum(Connector.power_kw), 0.0))
        .join(Site, Site.pk == Connector.site_pk)
        .where(Site.id == site_id, Connector.measured_at >= since)
    )
    return round(float(total or 0.0), 4)
