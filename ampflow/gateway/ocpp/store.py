"""What the OCPP gateway reads and writes: plain functions over a database session.

Like the repositories in :mod:`ampflow.gateway.db.repo` they never commit; the caller's
transaction (usually a :class:`~.writer.GroupWriter` batch) does. Transactions and sessions:

* 1.6: the transaction id a station gets is the ``transactions.pk`` (an integer, as the schema
  requires); 2.0.1: the station chooses a string id, stored as ``ocpp_transaction_id``.
* A transaction attaches to the connector's open session if the API created one (a remote start,
  status ``requested``, or a session recorded while no station was connected); otherwise it opens
  a new session. A session left open by an earlier transaction that never ended is closed first.
* A repeated StartTransaction (a station retrying after a lost answer) gets the same id back.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway import billing
from ampflow.gateway.db.base import ChargingProfileStatus, SessionStatus
from ampflow.gateway.db.models import (
    Charger,
    ChargingProfile,
    Connector,
    ConnectorControl,
    IdToken,
    Node,
    Session,
    Site,
    Station,
    Transaction,
)
from ampflow.gateway.ocpp.capabilities import Capabilities
from ampflow.gateway.ocpp.events import AuthStatus, BootInfo, ChargingNeeds, StatusChange, TxEnd

__all__ = [
    "ConnectorInfo",
    "ProfileRecord",
    "StationInfo",
    "TxRef",
    "apply_charging_needs",
    "authorize",
    "last_limits",
    "load_station",
    "open_transactions",
    "record_boot",
    "record_profile",
    "record_profiles",
    "record_status",
    "save_capabilities",
    "save_flags",
    "start_transaction",
    "stop_transaction",
    "touch",
]


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    """A connector of a station's charger, with what a profile needs to convert units."""

    pk: int
    number: int
    connector_id: str  # site/charger/number
    phases: int
    voltage_v: float
    power_factor: float
    max_kw: float


@dataclass(frozen=True)
class StationInfo:
    """A registered station as the gateway needs it (read once per connection)."""

    pk: int
    id: str
    site_pk: int
    site_id: str
    charger_id: str | None
    password_hash: str | None
    registration_status: str
    vendor: str | None
    model: str | None
    quirks: tuple[str, ...]
    flags: tuple[str, ...]
    capabilities: Capabilities
    ceiling_kw: float  # the station's safe ceiling: its charger's maximum within its feeders
    connectors: Mapping[int, ConnectorInfo] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TxRef:
    """An open (or just closed) transaction and the session behind it."""

    pk: int
    ocpp_id: str
    session_pk: int
    session_id: str
    connector: int
    authorized: bool = True


def _ceiling(s: DbSession, site: Site, charger: Charger) -> float:
    """The charger's maximum, lowered by every kW limit above it."""
    out = min(charger.max_kw, site.import_kw)
    node_pk = charger.node_pk
    seen: set[int] = set()
    while node_pk is not None and node_pk not in seen:
        seen.add(node_pk)
        node = s.get(Node, node_pk)
        if node is None:
            break
        if node.import_kw is not None:
            out = min(out, node.import_kw)
        node_pk = node.parent_pk
    return float(out)


def load_station(s: DbSession, station_id: str) -> StationInfo | None:
    """A station with its charger's connectors, or None if it is not registered."""
    row = s.execute(
        select(Station, Site).join(Site, Site.pk == Station.site_pk).where(Station.id == station_id)
    ).first()
    if row is None:
        return None
    st, site = row
    charger = None if st.charger_pk is None else s.get(Charger, st.charger_pk)
    connectors: dict[int, ConnectorInfo] = {}
    ceiling = 0.0
    if charger is not None:
        ceiling = _ceiling(s, site, charger)
        voltage = charger.voltage_v or site.voltage_v
        for c in s.scalars(
            select(Connector).where(Connector.charger_pk == charger.pk).order_by(Connector.number)
        ):
            connectors[c.number] = ConnectorInfo(
                pk=c.pk,
                number=c.number,
                connector_id=f"{site.id}/{charger.id}/{c.number}",
                phases=charger.phases if charger.kind == "AC" else 3,
                voltage_v=float(voltage),
                power_factor=float(site.power_factor),
                max_kw=float(charger.max_kw),
            )
    return StationInfo(
        pk=st.pk,
        id=st.id,
        site_pk=site.pk,
        site_id=site.id,
        charger_id=None if charger is None else charger.id,
        password_hash=st.password_hash,
        registration_status=st.registration_status,
        vendor=st.vendor,
        model=st.model,
        quirks=tuple(st.quirks or ()),
        flags=tuple(st.flags or ()),
        capabilities=Capabilities.from_row(
            st.rate_units, st.max_schedule_periods, st.max_stack_level, st.smart_charging
        ),
        ceiling_kw=ceiling,
        connectors=connectors,
    )


def open_transactions(s: DbSession, station_pk: int) -> list[TxRef]:
    """The station's transactions that have not ended (to resume after a restart)."""
    rows = s.execute(
        select(Transaction, Session, Connector.number)
        .join(Session, Session.pk == Transaction.session_pk)
        .join(Connector, Connector.pk == Session.connector_pk)
        .where(Transaction.station_pk == station_pk, Transaction.stopped_at.is_(None))
        .order_by(Transaction.pk)
    ).all()
    return [
        TxRef(
            tx.pk,
            tx.ocpp_transaction_id,
            ses.pk,
            ses.id,
            int(number),
            authorized=ses.status == SessionStatus.ACTIVE.value,
        )
        for tx, ses, number in rows
    ]


def record_boot(
    s: DbSession, station_pk: int, *, version: str, boot: BootInfo, at: datetime
) -> None:
    """Store who the station says it is."""
    st = s.get_one(Station, station_pk)
    st.ocpp_version = version
    st.vendor = boot.vendor[:50]
    st.model = boot.model[:50]
    st.serial_number = None if boot.serial_number is None else boot.serial_number[:50]
    st.firmware_version = None if boot.firmware_version is None else boot.firmware_version[:50]
    st.boot_at = at
    st.last_seen_at = at


def record_status(
    s: DbSession, station_pk: int, connector_pk: int | None, change: StatusChange
) -> None:
    """A connector's (or, with ``connector_pk`` None, the station's) status."""
    if connector_pk is None:
        s.get_one(Station, station_pk).status = change.status[:32]
        return
    c = s.get_one(Connector, connector_pk)
    c.status = change.status[:32]
    c.error_code = None if change.error_code is None else change.error_code[:50]
    c.status_at = change.at


def touch(s: DbSession, seen: Mapping[int, datetime]) -> None:
    """Last contact of many stations (one bulk update by primary key)."""
    if seen:
        s.execute(update(Station), [{"pk": pk, "last_seen_at": at} for pk, at in seen.items()])


def authorize(
    s: DbSession, token: str, *, site_pk: int, now: datetime, accept_unknown: bool
) -> tuple[AuthStatus, datetime | None, str | None]:
    """Status, expiry and group of an idTag for a station of ``site_pk``."""
    row = s.scalar(select(IdToken).where(IdToken.token == token))
    if row is None:
        return (AuthStatus.ACCEPTED if accept_unknown else AuthStatus.INVALID), None, None
    if row.site_pk is not None and row.site_pk != site_pk:
        return AuthStatus.INVALID, None, None
    if row.expires_at is not None and row.expires_at <= now:
        return AuthStatus.EXPIRED, row.expires_at, row.group_token
    try:
        status = AuthStatus(row.status)
    except ValueError:
        status = AuthStatus.INVALID
    return status, row.expires_at, row.group_token


def _existing_start(
    s: DbSession, station_pk: int, connector_pk: int, ocpp_id: str | None, at: datetime
) -> Transaction | None:
    if ocpp_id is not None:
        return s.scalar(
            select(Transaction).where(
                Transaction.station_pk == station_pk, Transaction.ocpp_transaction_id == ocpp_id
            )
        )
    return s.scalar(
        select(Transaction)
        .join(Session, Session.pk == Transaction.session_pk)
        .where(
            Transaction.station_pk == station_pk,
            Session.connector_pk == connector_pk,
            Transaction.started_at == at,
        )
    )


def _tx_ref(tx: Transaction, ses: Session, connector: int) -> TxRef:
    authorized = ses.status != SessionStatus.COMPLETED.value
    return TxRef(tx.pk, tx.ocpp_transaction_id, ses.pk, ses.id, connector, authorized)


def start_transaction(
    s: DbSession,
    *,
    station_pk: int,
    connector: ConnectorInfo,
    ocpp_id: str | None,
    id_token: str | None,
    meter_start_wh: float | None,
    at: datetime,
    authorized: bool,
) -> TxRef:
    """Record a transaction and its session (see the module notes); returns its reference."""
    existing = _existing_start(s, station_pk, connector.pk, ocpp_id, at)
    if existing is not None:
        return _tx_ref(existing, s.get_one(Session, existing.session_pk), connector.number)
    ses = s.scalar(
        select(Session).where(
            Session.connector_pk == connector.pk,
            Session.status.in_([x.value for x in SessionStatus.open()]),
        )
    )
    if ses is not None and s.scalar(select(Transaction.pk).where(Transaction.session_pk == ses.pk)):
        ses.status, ses.ended_at, ses.power_kw = SessionStatus.COMPLETED.value, at, 0.0
        s.flush()
        ses = None
    if ses is None:
        site_pk = s.get_one(Connector, connector.pk).site_pk
        ses = Session(id=f"ses_{uuid.uuid4().hex[:20]}", site_pk=site_pk, connector_pk=connector.pk)
        ses.started_at = at
        s.add(ses)
    elif ses.status == SessionStatus.REQUESTED.value:
        ses.started_at = at  # a remote start: the session begins with its transaction
    ses.status = (SessionStatus.ACTIVE if authorized else SessionStatus.COMPLETED).value
    ses.id_token = id_token or ses.id_token
    ses.meter_start_wh = meter_start_wh
    ses.energy_kwh = 0.0
    if not authorized:
        ses.ended_at = at
    s.flush()
    tx = Transaction(
        session_pk=ses.pk,
        station_pk=station_pk,
        ocpp_transaction_id=ocpp_id or f"pending-{uuid.uuid4().hex[:24]}",
        id_tag=id_token,
        meter_start_wh=meter_start_wh,
        started_at=at,
    )
    s.add(tx)
    s.flush()
    if ocpp_id is None:
        tx.ocpp_transaction_id = str(tx.pk)  # 1.6: the integer id the station gets
    return TxRef(tx.pk, tx.ocpp_transaction_id, ses.pk, ses.id, connector.number, authorized)


def stop_transaction(s: DbSession, station_pk: int, end: TxEnd) -> TxRef | None:
    """End a transaction and its session; None if the station's transaction is unknown."""
    tx = s.scalar(
        select(Transaction).where(
            Transaction.station_pk == station_pk,
            Transaction.ocpp_transaction_id == end.transaction_id,
        )
    )
    if tx is None:
        return None
    ses = s.get_one(Session, tx.session_pk)
    number = s.get_one(Connector, ses.connector_pk).number
    if tx.stopped_at is None:
        tx.stopped_at = end.at
        tx.meter_stop_wh = end.meter_stop_wh
        tx.stop_reason = None if end.reason is None else end.reason[:32]
    start = tx.meter_start_wh if tx.meter_start_wh is not None else ses.meter_start_wh
    if end.meter_stop_wh is not None and start is not None:
        ses.energy_kwh = max(end.meter_stop_wh - start, 0.0) / 1000.0
    if ses.status != SessionStatus.COMPLETED.value:
        ses.status = SessionStatus.COMPLETED.value
        ses.ended_at = max(end.at, ses.started_at)
        billing.on_session_end(s, ses)  # its CDR (and V2G statement), in this transaction
    ses.power_kw = 0.0
    return _tx_ref(tx, ses, int(number))


def apply_charging_needs(
    s: DbSession, session_pk: int, needs: ChargingNeeds, now: datetime
) -> bool:
    """Set an open session's targets from ISO 15118 charging needs; False if it has ended."""
    ses = s.get(Session, session_pk)
    if ses is None or ses.status == SessionStatus.COMPLETED.value:
        return False
    if needs.departure_at is not None and needs.departure_at > ses.started_at:
        ses.departure_at = needs.departure_at
    if needs.energy_kwh is not None:
        ses.energy_target_kwh = ses.energy_kwh + needs.energy_kwh
    for name in ("ev_max_kw", "battery_kwh", "soc_pct", "soc_target_pct"):
        value = getattr(needs, name)
        if value is not None and math.isfinite(value):
            setattr(ses, name, value)
    ses.targets_updated_at = now
    return True


def save_capabilities(s: DbSession, station_pk: int, caps: Capabilities) -> None:
    """Store what the station reported about smart charging."""
    st = s.get_one(Station, station_pk)
    st.rate_units = caps.rate_units_text
    st.max_schedule_periods = caps.max_periods
    st.max_stack_level = caps.max_stack_level
    st.smart_charging = caps.smart_charging


def save_flags(s: DbSession, station_pk: int, flags: Iterable[str]) -> None:
    """Replace the station's flags (shown in the API)."""
    s.get_one(Station, station_pk).flags = sorted(set(flags))


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """An issued charging profile and its outcome."""

    station_pk: int
    connector_pk: int | None
    transaction_pk: int | None
    ocpp_profile_id: int
    purpose: str
    stack_level: int
    kind: str
    rate_unit: str
    schedule: dict[str, Any]
    limit_kw: float | None
    status: ChargingProfileStatus
    attempts: int
    sent_at: datetime | None
    responded_at: datetime | None
    outcome: str | None


def record_profile(s: DbSession, rec: ProfileRecord) -> None:
    """Store an issued profile; earlier accepted profiles with the same id become superseded."""
    record_profiles(s, [rec])


def record_profiles(s: DbSession, recs: Sequence[ProfileRecord]) -> None:
    """Store issued profiles, in the order given, in two statements whatever their number.

    Earlier accepted profiles with the same station and profile id become superseded, whether
    stored before or earlier in ``recs``. A round of limits is 1,000s of profiles, written in one
    :class:`~.writer.GroupWriter` batch; one by one (a SELECT, an INSERT and a savepoint each)
    they held that batch, and every station message waiting on it, for seconds.
    """
    if not recs:
        return
    accepted = ChargingProfileStatus.ACCEPTED.value
    superseded = ChargingProfileStatus.SUPERSEDED.value
    last: dict[tuple[int, int], int] = {}  # the last accepted record per key stays accepted
    for i, r in enumerate(recs):
        if r.status is ChargingProfileStatus.ACCEPTED:
            last[(r.station_pk, r.ocpp_profile_id)] = i
    if last:
        s.execute(
            update(ChargingProfile)
            .where(
                tuple_(ChargingProfile.station_pk, ChargingProfile.ocpp_profile_id).in_(
                    sorted(last)
                ),
                ChargingProfile.status == accepted,
            )
            .values(status=superseded)
            .execution_options(synchronize_session=False)
        )
    rows = [
        {
            "station_pk": r.station_pk,
            "connector_pk": r.connector_pk,
            "transaction_pk": r.transaction_pk,
            "ocpp_profile_id": r.ocpp_profile_id,
            "purpose": r.purpose,
            "stack_level": r.stack_level,
            "kind": r.kind,
            "rate_unit": r.rate_unit,
            "schedule": r.schedule,
            "limit_kw": r.limit_kw,
            "status": superseded
            if r.status is ChargingProfileStatus.ACCEPTED
            and last[(r.station_pk, r.ocpp_profile_id)] != i
            else r.status.value,
            "attempts": r.attempts,
            "sent_at": r.sent_at,
            "responded_at": r.responded_at,
            "outcome": None if r.outcome is None else r.outcome[:200],
        }
        for i, r in enumerate(recs)
    ]
    s.execute(insert(ChargingProfile), rows)


def last_limits(s: DbSession, connector_pks: Sequence[int]) -> dict[int, float]:
    """The control loop's last decided limit of these connectors [kW]."""
    if not connector_pks:
        return {}
    rows = s.execute(
        select(ConnectorControl.connector_pk, ConnectorControl.limit_kw).where(
            ConnectorControl.connector_pk.in_(list(connector_pks)),
            ConnectorControl.limit_kw.is_not(None),
        )
    ).all()
    return {int(pk): float(kw) for pk, kw in rows if kw is not None}
