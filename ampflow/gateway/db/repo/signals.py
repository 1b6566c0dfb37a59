"""Signals: DR events (import/export caps, SIMPLE levels) and price series, from any source.

API-posted events and OpenADR events land in the same table. OpenADR events are keyed by
``(source, site, external_id)`` and carry the VTN's modification number, so
:func:`upsert_external_signal` applies a modification once and ignores stale or repeated ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import OptState, SignalKind, SignalSource, SignalStatus, utcnow
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import Signal, SignalInterval, Site

__all__ = [
    "IntervalSpec",
    "cancel_signal",
    "create_signal",
    "get_signal",
    "list_signals",
    "new_signal_id",
    "set_opt_state",
    "site_id_of",
    "upsert_external_signal",
]


@dataclass(frozen=True)
class IntervalSpec:
    """``value`` over ``[start_at, end_at)``: a cap [kW], a SIMPLE level, or a price."""

    start_at: datetime
    end_at: datetime
    value: float


def new_signal_id(kind: SignalKind) -> str:
    """A fresh public id: ``dr_...`` for events, ``price_...`` for price series."""
    prefix = "price" if kind.is_price else "dr"
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _site_for_signal(s: DbSession, site_id: str) -> Site:
    site = s.scalar(select(Site).where(Site.id == site_id))
    if site is None:
        # A reference in the body to a site that does not exist conflicts with the stored state.
        raise ConflictError(f"site {site_id!r} does not exist", loc=("body", "site_id"))
    return site


def _check_intervals(site: Site, kind: SignalKind, intervals: Sequence[IntervalSpec]) -> None:
    if not intervals:
        raise ConflictError("intervals: expected at least one interval", loc=("body", "intervals"))
    if kind is SignalKind.IMPORT_CAP_KW:
        for iv in intervals:
            if iv.value < site.min_import_kw:
                raise ConflictError(
                    f"site {site.id!r}: cap_kw {iv.value:g} is below the site's minimum import "
                    f"{site.min_import_kw:g} kW (its uncontrollable load)",
                    loc=("body", "cap_kw"),
                )


def create_signal(
    s: DbSession,
    *,
    site_id: str,
    kind: SignalKind,
    intervals: Sequence[IntervalSpec],
    source: SignalSource = SignalSource.API,
    signal_id: str | None = None,
    priority: int = 0,
    external_id: str | None = None,
    modification_number: int = 0,
    program: str | None = None,
    currency: str | None = None,
    opt_state: OptState = OptState.NONE,
) -> Signal:
    """Store a signal with its intervals (sorted, non-overlapping; checked by the caller).

    Raises
    ------
    ConflictError
        For an unknown site, a duplicate id, or an import cap below the site's minimum.
    """
    site = _site_for_signal(s, site_id)
    _check_intervals(site, kind, intervals)
    sid = signal_id or new_signal_id(kind)
    if s.scalar(select(Signal.pk).where(Signal.id == sid)) is not None:
        raise ConflictError(f"signal id {sid!r} already exists", loc=("body", "id"))
    signal = Signal(
        id=sid,
        site_pk=site.pk,
        source=source.value,
        kind=kind.value,
        status=SignalStatus.ACTIVE.value,
        external_id=external_id,
        modification_number=modification_number,
        priority=priority,
        opt_state=opt_state.value,
        program=program,
        currency=currency,
        start_at=min(iv.start_at for iv in intervals),
        end_at=max(iv.end_at for iv in intervals),
        intervals=[
            SignalInterval(idx=i, start_at=iv.start_at, end_at=iv.end_at, value=iv.value)
            for i, iv in enumerate(intervals)
        ],
    )
    s.add(signal)
    s.flush()
    return signal


def upsert_external_signal(
    s: DbSession,
    *,
    source: SignalSource,
    external_id: str,
    site_id: str,
    kind: SignalKind,
    intervals: Sequence[IntervalSpec],
    modification_number: int,
    priority: int = 0,
    program: str | None = None,
    currency: str | None = None,
    cancelled: bool = False,
) -> tuple[Signal, bool]:
    """Create or modify an OpenADR event; returns the signal and whether anything changed.

    A modification number not above the stored one is a repeat (or stale) and changes nothing.
    """
    site = _site_for_signal(s, site_id)
    signal = s.scalar(
        select(Signal).where(
            Signal.source == source.value,
            Signal.site_pk == site.pk,
            Signal.external_id == external_id,
        )
    )
    if signal is None:
        created = create_signal(
            s,
            site_id=site_id,
            kind=kind,
            intervals=intervals,
            source=source,
            priority=priority,
            external_id=external_id,
            modification_number=modification_number,
            program=program,
            currency=currency,
        )
        if cancelled:
            cancel_signal(s, created.id)
        return created, True
    if modification_number <= signal.modification_number:
        return signal, False
    _check_intervals(site, kind, intervals)
    signal.kind = kind.value
    signal.modification_number = modification_number
    signal.priority = priority
    signal.program = program
    signal.currency = currency
    signal.start_at = min(iv.start_at for iv in intervals)
    signal.end_at = max(iv.end_at for iv in intervals)
    signal.intervals.clear()
    s.flush()
    signal.intervals.extend(
        SignalInterval(idx=i, start_at=iv.start_at, end_at=iv.end_at, value=iv.value)
        for i, iv in enumerate(intervals)
    )
    if cancelled:
        signal.status = SignalStatus.CANCELLED.value
        signal.cancelled_at = utcnow()
    s.flush()
    return signal, True


def get_signal(s: DbSession, signal_id: str, *, kinds: Sequence[SignalKind] = ()) -> Signal:
    """A signal by public id (of one of ``kinds`` if given). Raises NotFoundError."""
    q = select(Signal).where(Signal.id == signal_id)
    if kinds:
        q = q.where(Signal.kind.in_([k.value for k in kinds]))
    signal = s.scalar(q)
    if signal is None:
        raise NotFoundError(f"no signal {signal_id!r}", loc=("path", "event_id"))
    return signal


def site_id_of(s: DbSession, signal: Signal) -> str:
    """The public id of a signal's site."""
    return s.get_one(Site, signal.site_pk).id


def cancel_signal(s: DbSession, signal_id: str, *, kinds: Sequence[SignalKind] = ()) -> Signal:
    """Cancel a signal; cancelling twice is harmless and keeps the first time."""
    signal = get_signal(s, signal_id, kinds=kinds)
    if signal.status != SignalStatus.CANCELLED:
        signal.status = SignalStatus.CANCELLED.value
        signal.cancelled_at = utcnow()
        s.flush()
    return signal


def set_opt_state(s: DbSession, signal_id: str, opt_state: OptState) -> Signal:
    """Record the site's opt-in or opt-out; an opted-out event sets no cap."""
    signal = get_signal(s, signal_id)
    signal.opt_state = opt_state.value
    s.flush()
    return signal


def list_signals(
    s: DbSession,
    *,
    site_ids: Sequence[str] | None = None,
    kinds: Sequence[SignalKind] = (),
    status: SignalStatus | None = None,
    overlapping: tuple[datetime, datetime] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[tuple[Signal, str]]:
    """Signals with their site id, by start time.

    Parameters
    ----------
    site_ids : sequence of str, optional
        Only these sites (``None`` = all).
    kinds : sequence of SignalKind
        Only these kinds (empty = all).
    status : SignalStatus, optional
    overlapping : (start, end), optional
        Only signals with some interval in ``[start, end)``.
    """
    q: Select[Signal, str] = select(Signal, Site.id).join(Site, Site.pk == Signal.site_pk)
    if site_ids is not None:
        q = q.where(Site.id.in_(list(site_ids)))
    if kinds:
        q = q.where(Signal.kind.in_([k.value for k in kinds]))
    if status is not None:
        q = q.where(Signal.status == status.value)
    if overlapping is not None:
        start, end = overlapping
        q = q.where(Signal.start_at < end, Signal.end_at > start)
    q = q.order_by(Signal.start_at, Signal.pk).limit(limit).offset(offset)
    return [(sig, site_id) for sig, site_id in s.execute(q).all()]
