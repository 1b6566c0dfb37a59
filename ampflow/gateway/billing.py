"""Billing service: when a session ends, price it and store its OCPI CDR; settle V2G export.

:func:`on_session_end` is called in the transaction that ends a session (the OCPP gateway's
StopTransaction / TransactionEvent Ended, or a stop through the API). It reads the session's
meter values, prices the session with the site's tariff that was valid when the session started
(:func:`ampflow.engine.pricing.price_session`), stores the OCPI 2.2.1 CDR with an audit entry,
and, for a session that exported energy (or was flagged V2G), settles the export
(:func:`ampflow.engine.settlement.settle_session`) and stores the statement. Each step runs in
its own savepoint and never raises: a session whose site has no tariff, or whose data cannot be
priced, still ends, and is logged; an operator can bill it later (:func:`issue_cdr`).

From stored meter values to a :class:`~ampflow.engine.periods.SessionUsage`
-----------------------------------------------------------------------------
* The energy register (``Energy.Active.Import.Register``) samples taken during the session,
  plus its value at the start -- the transaction's ``meterStart`` (or the register when the
  session opened), else the latest reading at or before the start -- and at the end --
  ``meterStop``, else the earliest reading at or after the end. Meter values carry whole
  seconds, so these start and stop readings win over a sample stamped in the same second. A
  register that goes backwards (a glitch) is held at its highest value.
* Before the first reading and after the last the register is flat, so a session's energy is
  exactly what its meter moved. A session without any reading is priced with the energy it
  recorded, delivered at constant power.
* Power (``Power.Active.Import``) and current (``Current.Import``, summed over L1-L3, else the
  phase-less value) apply at the timestamps where they were sampled with the register.
* The export register, for V2G, is interpolated linearly onto the same timeline.

Stored values are floats of Wh; each becomes a ``Decimal`` through its shortest ``repr``, so
``1234.5`` Wh is exactly ``1.2345`` kWh.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ampflow.engine.cdr import (
    AuditAction,
    AuditRecord,
    AuthMethod,
    CdrContext,
    CdrToken,
    TokenType,
    audit_record,
    build_cdr,
    credit_cdr,
    ocpi_json,
)
from ampflow.engine.errors import AmpflowError
from ampflow.engine.periods import MeterSample, SessionUsage
from ampflow.engine.pricing import PricedSession, price_session
from ampflow.engine.settlement import (
    DrEvent,
    LineKind,
    Party,
    PriceInterval,
    SchedulerPrices,
    SessionStatement,
    SettlementLine,
    V2gProgram,
    V2gSession,
    metered_intervals,
    scheduler_prices,
    settle_session,
)
from ampflow.engine.tariffs import Tariff, parse_ocpi_datetime, parse_tariff, select_tariff
from ampflow.gateway.db.base import Measurand, Phase, SessionStatus, SignalKind, SignalStatus
from ampflow.gateway.db.base import utcnow as _utcnow
from ampflow.gateway.db.errors import ConflictError
from ampflow.gateway.db.models import (
    Charger,
    Connector,
    IdToken,
    MeterValue,
    Session,
    Site,
    Transaction,
)
from ampflow.gateway.db.models_billing import CdrRow, SiteBilling, V2gStatementRow
from ampflow.gateway.db.repo import billing as repo
from ampflow.gateway.db.repo import signals as signal_repo

__all__ = [
    "BillingOptions",
    "CreditResult",
    "credit",
    "issue_cdr",
    "loads",
    "on_session_end",
    "price_stored_session",
    "scheduler_money",
    "session_samples",
    "settle_v2g",
    "statement_from_json",
]

logger = logging.getLogger(__name__)

_ZERO = Decimal(0)
_KILO = Decimal(1000)
_Q_KWH = Decimal("1e-9")
_DR_KINDS = (SignalKind.IMPORT_CAP_KW, SignalKind.SIMPLE_LEVEL, SignalKind.EXPORT_CAP_KW)
_MEASURANDS = (
    Measurand.ENERGY_IMPORT_WH,
    Measurand.ENERGY_EXPORT_WH,
    Measurand.POWER_IMPORT_W,
    Measurand.CURRENT_IMPORT_A,
)


def loads(text: str) -> Any:
    """JSON text with every non-integer number as an exact ``Decimal``.

    Examples
    --------
    >>> loads('{"price": 0.250, "step_size": 1}')
    {'price': Decimal('0.250'), 'step_size': 1}
    """
    return json.loads(text, parse_float=Decimal)


def _dec(value: float) -> Decimal:
    """A stored float as the Decimal it was written as (its shortest repr)."""
    return Decimal(repr(float(value)))


def _bounded(text: str, size: int) -> str:
    """``text`` if it fits in ``size`` characters, else a stable shortened form."""
    if len(text) <= size:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: size - 9]}~{digest}"


@dataclass(frozen=True)
class BillingOptions:
    """A site's billing settings as exact values (see :class:`SiteBilling`)."""

    idle_grace_s: int
    idle_power_kw: Decimal
    money_places: int
    v2g_interval_s: int
    default_export_price: Decimal
    dr_payment_per_kwh: Decimal
    capacity_payment_per_kw: Decimal
    program: V2gProgram

    @classmethod
    def of(cls, row: SiteBilling, currency: str) -> BillingOptions:
        return cls(
            idle_grace_s=row.idle_grace_s,
            idle_power_kw=Decimal(row.idle_power_kw),
            money_places=row.money_places,
            v2g_interval_s=row.v2g_interval_s,
            default_export_price=Decimal(row.default_export_price),
            dr_payment_per_kwh=Decimal(row.dr_payment_per_kwh),
            capacity_payment_per_kw=Decimal(row.capacity_payment_per_kw),
            program=V2gProgram(
                currency=currency,
                degradation_per_kwh=Decimal(row.degradation_per_kwh),
                driver_share=Decimal(row.driver_share),
                missed_target_per_kwh=Decimal(row.missed_target_per_kwh),
                dr_excludes_export=row.dr_excludes_export,
            ),
        )

    @classmethod
    def for_site(cls, s: DbSession, site: Site) -> BillingOptions:
        return cls.of(repo.billing_settings(s, site.pk), site.currency)


# --- meter values -> samples ----------------------------------------------------------------------


def _interpolate(points: Sequence[tuple[datetime, Decimal]], t: datetime) -> Decimal:
    """A cumulative register at ``t``: linear between readings, flat outside them."""
    if t <= points[0][0]:
        return points[0][1]
    if t >= points[-1][0]:
        return points[-1][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            if t == t1:
                return v1
            part = Decimal((t - t0) // timedelta(microseconds=1))
            span = Decimal((t1 - t0) // timedelta(microseconds=1))
            return v0 + ((v1 - v0) * part / span).quantize(_Q_KWH, "ROUND_FLOOR")
    raise AssertionError("unreachable")  # pragma: no cover


def _register(
    readings: dict[datetime, Decimal], start: datetime, stop: datetime
) -> list[tuple[datetime, Decimal]]:
    """Readings in time order, never decreasing, covering ``[start, stop]``."""
    points: list[tuple[datetime, Decimal]] = []
    for t in sorted(readings):
        value = readings[t]
        if points and value < points[-1][1]:
            logger.info("meter register went back from %s to %s at %s", points[-1][1], value, t)
            value = points[-1][1]
        points.append((t, value))
    if points[0][0] > start:
        points.insert(0, (start, points[0][1]))
    if points[-1][0] < stop:
        points.append((stop, points[-1][1]))
    return points


def _clip(
    readings: dict[datetime, Decimal],
    start: datetime,
    stop: datetime,
    *,
    first: Decimal | None = None,
    last: Decimal | None = None,
) -> dict[datetime, Decimal]:
    """Register readings strictly inside the session, and its value at the start (``first``,
    else the latest reading at or before the start) and at the stop (``last``, else the earliest
    reading at or after it). Meter values carry whole seconds, so one taken just after the start
    may be stamped before it: the transaction's own start and stop readings win."""
    out = {t: v for t, v in readings.items() if start < t < stop}
    before = [t for t in readings if t <= start]
    after = [t for t in readings if t >= stop]
    if first is None and before:
        first = readings[max(before)]
    if last is None and after:
        last = readings[min(after)]
    if first is not None and (out or last is not None or before):
        out[start] = first
    if last is not None:
        out[stop] = last
    return out


def _readings(s: DbSession, ses: Session, stop: datetime) -> dict[int, dict[int, float]]:
    """``{ts: {key: value}}``: key is the measurand code x 10 + phase."""
    lo = int(ses.started_at.timestamp())
    hi = int(stop.timestamp()) + (0 if stop.timestamp().is_integer() else 1)
    rows = s.execute(
        select(MeterValue.ts, MeterValue.measurand, MeterValue.phase, MeterValue.value).where(
            MeterValue.connector_pk == ses.connector_pk,
            MeterValue.measurand.in_([int(m) for m in _MEASURANDS]),
            MeterValue.ts >= lo,
            MeterValue.ts <= hi,
        )
    ).all()
    out: dict[int, dict[int, float]] = defaultdict(dict)
    for ts, measurand, phase, value in rows:
        out[int(ts)][int(measurand) * 10 + int(phase)] = float(value)
    return out


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _current_a(values: dict[int, float]) -> Decimal | None:
    base = int(Measurand.CURRENT_IMPORT_A) * 10
    phases = [values[base + p] for p in (Phase.L1, Phase.L2, Phase.L3) if base + p in values]
    if phases:
        return max(_ZERO, sum((_dec(v) for v in phases), _ZERO))
    if base in values:
        return max(_ZERO, _dec(values[base]))
    return None


def session_samples(s: DbSession, ses: Session) -> tuple[MeterSample, ...]:
    """The meter samples of an ended session, in kWh, covering its start and end (see the module
    notes). ``export_kwh`` is set on every sample when the meter reported export, else on none."""
    if ses.ended_at is None:
        raise ConflictError(f"session {ses.id!r} has not ended", loc=("body", "session_id"))
    start, stop = ses.started_at, ses.ended_at
    tx = s.scalar(select(Transaction).where(Transaction.session_pk == ses.pk))
    by_ts = _readings(s, ses, stop)
    e_code = int(Measurand.ENERGY_IMPORT_WH) * 10
    x_code = int(Measurand.ENERGY_EXPORT_WH) * 10
    energy = {_at(t): _dec(v[e_code]) / _KILO for t, v in by_ts.items() if e_code in v}
    export = {_at(t): _dec(v[x_code]) / _KILO for t, v in by_ts.items() if x_code in v}
    meter_start = tx.meter_start_wh if tx is not None else None
    if meter_start is None:
        meter_start = ses.meter_start_wh
    meter_stop = tx.meter_stop_wh if tx is not None else None
    energy = _clip(
        energy,
        start,
        stop,
        first=None if meter_start is None else _dec(meter_start) / _KILO,
        last=None if meter_stop is None else _dec(meter_stop) / _KILO,
    )
    if not energy:
        energy = {start: _ZERO, stop: max(_ZERO, _dec(ses.energy_kwh))}
    export = _clip(export, start, stop)
    imp = _register(energy, start, stop)
    exp = _register(export, start, stop) if export else None
    times = sorted({t for t, _ in imp} | ({t for t, _ in exp} if exp else set()))
    p_code = int(Measurand.POWER_IMPORT_W) * 10
    samples = []
    for t in times:
        values = by_ts.get(int(t.timestamp()), {}) if t.microsecond == 0 else {}
        power = values.get(p_code)
        samples.append(
            MeterSample(
                t,
                _interpolate(imp, t),
                power_kw=None if power is None else max(_ZERO, _dec(power) / _KILO),
                current_a=_current_a(values),
                export_kwh=None if exp is None else _interpolate(exp, t),
            )
        )
    return tuple(samples)


# --- CDRs -----------------------------------------------------------------------------------------


def _tariff_for(s: DbSession, ses: Session, site: Site, tariff_id: str | None) -> Tariff:
    if tariff_id is not None:
        return parse_tariff(loads(repo.get_tariff(s, site, tariff_id).body))
    rows = repo.tariffs_at(s, site.pk, ses.started_at)
    chosen = select_tariff([parse_tariff(loads(r.body)) for r in rows], ses.started_at)
    if chosen is None:
        raise ConflictError(
            f"site {site.id!r} has no tariff valid at the session start "
            f"{ses.started_at.isoformat()} (assign one, or name a tariff_id)",
            loc=("body", "tariff_id"),
        )
    return chosen


@dataclass(frozen=True)
class _Parties:
    """Who a session bills to: the token, the driver's contract, and how it was authorised."""

    token: CdrToken
    driver_id: str
    auth_method: AuthMethod


def _parties(s: DbSession, ses: Session) -> _Parties:
    tx = s.scalar(select(Transaction).where(Transaction.session_pk == ses.pk))
    uid = ses.id_token or (tx.id_tag if tx is not None else None)
    row = None if uid is None else s.scalar(select(IdToken).where(IdToken.token == uid))
    driver = (row.driver_id if row is not None else None) or uid or "anonymous"
    if tx is None:
        method = AuthMethod.COMMAND
    else:
        method = AuthMethod.AUTH_REQUEST if tx.id_tag else AuthMethod.WHITELIST
    token = CdrToken(
        uid=_bounded(uid or "UNKNOWN", 36),
        contract_id=_bounded(driver, 36),
        type=TokenType.RFID if uid else TokenType.OTHER,
    )
    return _Parties(token, driver[:64], method)


def _context(
    s: DbSession, ses: Session, site: Site, tariff: Tariff, parties: _Parties
) -> CdrContext:
    connector = s.get_one(Connector, ses.connector_pk)
    charger = s.get_one(Charger, connector.charger_pk)
    if charger.kind == "DC":
        power_type = "DC"
    else:
        power_type = "AC_1_PHASE" if charger.phases == 1 else "AC_3_PHASE"
    location: dict[str, Any] = {"connector_power_type": power_type}
    if site.name:
        location["name"] = site.name
    evse = f"{charger.id}/{connector.number}"
    return CdrContext(
        cdr_id=f"CDR-{uuid.uuid4().hex[:20].upper()}",
        country_code=tariff.country_code,
        party_id=tariff.party_id,
        session_id=_bounded(ses.id, 36),
        token=parties.token,
        auth_method=parties.auth_method,
        location_id=_bounded(site.id, 36),
        evse_uid=_bounded(evse, 36),
        evse_id=_bounded(
            f"{tariff.country_code}*{tariff.party_id}*E{charger.id}*{connector.number}", 48
        ),
        connector_id=str(connector.number),
        location=location,
    )


def price_stored_session(
    s: DbSession, ses: Session, *, tariff_id: str | None = None
) -> tuple[PricedSession, Site, BillingOptions]:
    """Price an ended session with the site's tariff valid at its start (or ``tariff_id``)."""
    site = s.get_one(Site, ses.site_pk)
    tariff = _tariff_for(s, ses, site, tariff_id)
    options = BillingOptions.for_site(s, site)
    usage = SessionUsage(ses.started_at, _ended(ses), session_samples(s, ses))
    priced = price_session(
        tariff,
        usage,
        time_zone=site.timezone,
        idle_grace_s=options.idle_grace_s,
        idle_power_kw=options.idle_power_kw,
    )
    return priced, site, options


def _ended(ses: Session) -> datetime:
    if ses.status != SessionStatus.COMPLETED.value or ses.ended_at is None:
        raise ConflictError(
            f"session {ses.id!r} is {ses.status}: only an ended session has a CDR",
            loc=("body", "session_id"),
        )
    if ses.ended_at <= ses.started_at:
        raise ConflictError(
            f"session {ses.id!r} ended when it started ({ses.started_at.isoformat()}): "
            "nothing to bill",
            loc=("body", "session_id"),
        )
    return ses.ended_at


def _store_cdr(
    s: DbSession, cdr: dict[str, Any], record: AuditRecord, *, site_pk: int, session_pk: int
) -> CdrRow:
    token = cdr["cdr_token"]
    row = repo.add_cdr(
        s,
        CdrRow(
            id=cdr["id"],
            site_pk=site_pk,
            session_pk=session_pk,
            credit=bool(cdr.get("credit", False)),
            credit_reference_id=cdr.get("credit_reference_id"),
            token_uid=token["uid"],
            contract_id=token["contract_id"],
            currency=cdr["currency"],
            start_at=parse_ocpi_datetime(cdr["start_date_time"]),
            end_at=parse_ocpi_datetime(cdr["end_date_time"]),
            issued_at=parse_ocpi_datetime(cdr["last_updated"]),
            body=ocpi_json(cdr),
        ),
    )
    repo.add_audit(
        s,
        site_pk=site_pk,
        at=record.at,
        action=record.action.value,
        actor=record.actor,
        cdr_id=record.cdr_id,
        reference_id=record.reference_id,
        body=ocpi_json(record.to_dict()),
    )
    return row


def issue_cdr(
    s: DbSession,
    ses: Session,
    *,
    actor: str = "system",
    tariff_id: str | None = None,
    now: datetime | None = None,
    reason: str = "session ended",
) -> CdrRow:
    """Price an ended session and store its CDR and an audit entry.

    Raises
    ------
    ConflictError
        If the session has not ended, already has a CDR that stands, or no tariff applies.
    AmpflowError
        If its data cannot be priced (the message names the field).
    """
    existing = repo.current_cdr(s, ses.pk)
    if existing is not None:
        raise ConflictError(
            f"session {ses.id!r} already has CDR {existing.id!r}; credit it first",
            loc=("body", "session_id"),
        )
    priced, site, options = price_stored_session(s, ses, tariff_id=tariff_id)
    parties = _parties(s, ses)
    at = now or _utcnow()
    cdr = build_cdr(
        priced,
        _context(s, ses, site, priced.tariff, parties),
        last_updated=at,
        money_places=options.money_places,
    )
    record = audit_record(cdr, action=AuditAction.ISSUED, actor=actor, at=at, reason=reason)
    return _store_cdr(s, cdr, record, site_pk=site.pk, session_pk=ses.pk)


@dataclass(frozen=True)
class CreditResult:
    """A Credit CDR and, when asked for, the corrected CDR issued after it."""

    credit: CdrRow
    reissued: CdrRow | None


def credit(
    s: DbSession,
    cdr_id: str,
    *,
    actor: str,
    reason: str,
    reissue: bool = False,
    tariff_id: str | None = None,
    now: datetime | None = None,
) -> CreditResult:
    """Cancel a CDR with a Credit CDR (never an edit); optionally re-price the session into a
    new CDR (with ``tariff_id``, or the tariff valid at its start).

    Raises
    ------
    NotFoundError, ConflictError
        For an unknown CDR, a Credit CDR, or one credited already.
    """
    row = repo.get_cdr(s, cdr_id)
    if row.credit:
        raise ConflictError(
            f"CDR {cdr_id!r} is a Credit CDR; credit the original CDR instead",
            loc=("path", "cdr_id"),
        )
    done = repo.cdr_credit(s, cdr_id)
    if done is not None:
        raise ConflictError(
            f"CDR {cdr_id!r} was credited already by {done.id!r}", loc=("path", "cdr_id")
        )
    at = now or _utcnow()
    credit_json, record = credit_cdr(loads(row.body), last_updated=at, actor=actor, reason=reason)
    credit_row = _store_cdr(s, credit_json, record, site_pk=row.site_pk, session_pk=row.session_pk)
    new = None
    if reissue:
        ses = s.get_one(Session, row.session_pk)
        new = issue_cdr(
            s, ses, actor=actor, tariff_id=tariff_id, now=at, reason=f"corrects {row.id}"
        )
    return CreditResult(credit_row, new)


# --- V2G ------------------------------------------------------------------------------------------


def _export_prices(
    s: DbSession, site: Site, start: datetime, end: datetime, default: Decimal
) -> list[PriceInterval]:
    """The site's export price over ``[start, end)``, without gaps: among overlapping series
    the lowest priority number wins, then the newest (as in the control loop); ``default``
    where none applies."""
    found = signal_repo.list_signals(
        s,
        site_ids=[site.id],
        kinds=[SignalKind.EXPORT_PRICE],
        status=SignalStatus.ACTIVE,
        overlapping=(start, end),
        limit=10_000,
    )
    spans = [
        ((sig.priority, -sig.pk), max(iv.start_at, start), min(iv.end_at, end), _dec(iv.value))
        for sig, _ in found
        for iv in sig.intervals
        if iv.end_at > start and iv.start_at < end
    ]
    cuts = sorted({start, end} | {a for _, a, _, _ in spans} | {b for _, _, b, _ in spans})
    out: list[PriceInterval] = []
    for a, b in itertools.pairwise(cuts):
        covering = [(rank, p) for rank, lo, hi, p in spans if lo <= a and hi >= b]
        value = min(covering)[1] if covering else default
        if out and out[-1].price_per_kwh == value and out[-1].end == a:
            out[-1] = PriceInterval(out[-1].start, b, value)
        else:
            out.append(PriceInterval(a, b, value))
    return out


def _dr_events(
    s: DbSession, site: Site, start: datetime, end: datetime, options: BillingOptions
) -> list[DrEvent]:
    """The site's DR events (not cancelled, not opted out) during the session, overlapping ones
    merged into one, each paying the site's DR and capacity rates."""
    if options.dr_payment_per_kwh == 0 and options.capacity_payment_per_kw == 0:
        return []
    found = signal_repo.list_signals(
        s,
        site_ids=[site.id],
        kinds=list(_DR_KINDS),
        status=SignalStatus.ACTIVE,
        overlapping=(start, end),
        limit=10_000,
    )
    windows = sorted(
        (sig.start_at, sig.end_at, sig.id) for sig, _ in found if sig.opt_state != "opt_out"
    )
    merged: list[list[Any]] = []
    for a, b, sid in windows:
        if merged and a < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
            merged[-1][2] += f"+{sid}"
        else:
            merged.append([a, b, sid])
    return [
        DrEvent(sid, a, b, options.dr_payment_per_kwh, options.capacity_payment_per_kw)
        for a, b, sid in merged
    ]


def _committed_kw(s: DbSession, ses: Session) -> Decimal:
    """A V2G session commits its charger's discharge power (capped by the EV's maximum)."""
    if not ses.v2g:
        return _ZERO
    charger = s.get_one(Charger, s.get_one(Connector, ses.connector_pk).charger_pk)
    if not charger.bidirectional:
        return _ZERO
    kw = charger.discharge_max_kw if charger.discharge_max_kw is not None else charger.max_kw
    if ses.ev_max_kw is not None:
        kw = min(kw, ses.ev_max_kw)
    return max(_ZERO, _dec(kw))


def settle_v2g(
    s: DbSession, ses: Session, samples: Sequence[MeterSample] | None = None
) -> V2gStatementRow:
    """Settle an ended session's V2G export and store the statement.

    Raises
    ------
    ConflictError
        If the session has not ended or was settled already.
    AmpflowError
        If the settlement inputs are inconsistent (a negative export price, say).
    """
    end = _ended(ses)
    if repo.get_statement(s, ses.pk) is not None:
        raise ConflictError(f"session {ses.id!r} is settled already", loc=("body", "session_id"))
    site = s.get_one(Site, ses.site_pk)
    options = BillingOptions.for_site(s, site)
    samples = session_samples(s, ses) if samples is None else samples
    intervals = metered_intervals(
        samples, start=ses.started_at, end=end, interval_s=options.v2g_interval_s
    )
    parties = _parties(s, ses)
    target = None if ses.energy_target_kwh is None else _dec(ses.energy_target_kwh)
    session = V2gSession(
        session_id=ses.id,
        driver_id=parties.driver_id,
        site_id=site.id,
        intervals=intervals,
        committed_kw=_committed_kw(s, ses),
        target_kwh=target,
    )
    statement = settle_session(
        session,
        program=options.program,
        export_prices=_export_prices(s, site, ses.started_at, end, options.default_export_price),
        events=_dr_events(s, site, ses.started_at, end, options),
    )
    return repo.save_statement(
        s,
        V2gStatementRow(
            session_pk=ses.pk,
            site_pk=site.pk,
            driver_id=parties.driver_id,
            currency=statement.currency,
            start_at=statement.start,
            end_at=statement.end,
            body=ocpi_json(statement.to_dict()),
        ),
    )


def scheduler_money(
    s: DbSession, site: Site, *, start: datetime, n_steps: int, dt_s: int
) -> SchedulerPrices:
    """The value of a kWh discharged in each scheduler step at ``site`` and the degradation
    cost, exactly as :func:`settle_v2g` will pay them (the site's export price series with its
    default, and its DR rate during DR events), for ``ScheduleProblem(**.problem_kwargs())``.
    """
    options = BillingOptions.for_site(s, site)
    end = start + timedelta(seconds=n_steps * dt_s)
    return scheduler_prices(
        _export_prices(s, site, start, end, options.default_export_price),
        program=options.program,
        start=start,
        n_steps=n_steps,
        dt_s=dt_s,
        events=_dr_events(s, site, start, end, options),
    )


def _time(value: Any) -> datetime | None:
    return None if value is None else parse_ocpi_datetime(value)


def statement_from_json(text: str) -> SessionStatement:
    """A stored session statement back as a :class:`SessionStatement` (exact)."""
    d = loads(text)
    lines = tuple(
        SettlementLine(
            LineKind(ln["kind"]),
            Party(ln["payer"]),
            Party(ln["payee"]),
            Decimal(ln["quantity"]),
            ln["unit"],
            Decimal(ln["rate"]),
            Decimal(ln["amount"]),
            _time(ln["start"]),
            _time(ln["end"]),
            ln["reference"],
        )
        for ln in d["lines"]
    )
    return SessionStatement(
        d["session_id"],
        d["driver_id"],
        d["site_id"],
        d["currency"],
        parse_ocpi_datetime(d["start"]),
        parse_ocpi_datetime(d["end"]),
        lines,
        *(
            Decimal(d[k])
            for k in (
                "metered_export_kwh",
                "settled_export_kwh",
                "import_kwh",
                "delivered_kwh",
                "shortfall_kwh",
            )
        ),
    )


# --- the hook -------------------------------------------------------------------------------------


def _exported(samples: Sequence[MeterSample]) -> bool:
    first, last = samples[0].export_kwh, samples[-1].export_kwh
    return first is not None and last is not None and last > first


def on_session_end(s: DbSession, ses: Session, *, now: datetime | None = None) -> None:
    """Bill a session that has just ended: its CDR, and its V2G statement if it exported.

    Never raises: each step runs in a savepoint, and what cannot be billed is logged (the
    session stays ended; :func:`issue_cdr` bills it later). Calling it again does nothing
    more for a session already billed and settled.
    """
    if ses.status != SessionStatus.COMPLETED.value or ses.ended_at is None:
        return
    if ses.ended_at <= ses.started_at:
        return  # refused or instant: nothing was used
    samples: tuple[MeterSample, ...] = ()

    def read() -> None:
        nonlocal samples
        samples = session_samples(s, ses)

    def cdr() -> None:
        if repo.current_cdr(s, ses.pk) is None and repo.tariffs_at(s, ses.site_pk, ses.started_at):
            issue_cdr(s, ses, now=now)

    def v2g() -> None:
        if (ses.v2g or _exported(samples)) and repo.get_statement(s, ses.pk) is None:
            settle_v2g(s, ses, samples)

    for step, what in ((read, "read its meter values"), (cdr, "bill it"), (v2g, "settle it")):
        if not _step(s, step, ses.id, what):
            return


def _step(s: DbSession, step: Callable[[], None], session_id: str, what: str) -> bool:
    """Run one billing step in a savepoint; False (logged) if it failed."""
    try:
        with s.begin_nested():
            step()
    # Billing must never undo the end of a session (the caller's transaction, which may carry
    # other stations' writes too), so any failure is logged and the session stays ended.
    except AmpflowError as exc:
        logger.warning("session %s ended, but could not %s: %s", session_id, what, exc)
        return False
    except Exception:
        logger.exception("session %s ended, but could not %s", session_id, what)
        return False
    return True
