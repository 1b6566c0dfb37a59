"""Meter values: idempotent bulk ingest, the latest reading per connector, and range reads.

Ingest inserts with ``ON CONFLICT DO NOTHING`` on the natural key, so a value re-sent after a
reconnect is stored once. In the same transaction it moves each connector's latest readings
(power, energy register, SoC) forward and updates the open session's delivered energy, which is
the register now minus the register when the session started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import Measurand, Phase, SessionStatus
from ampflow.gateway.db.models import Connector, MeterValue, Session

__all__ = ["MeterSample", "ingest_meter_values", "read_meter_values"]

_LATEST = {
    Measurand.POWER_IMPORT_W: "power",
    Measurand.ENERGY_IMPORT_WH: "energy",
    Measurand.SOC_PCT: "soc",
}


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One value in its canonical unit (see :class:`~ampflow.gateway.db.base.Measurand`)."""

    connector_pk: int
    ts: int  # epoch seconds, UTC
    measurand: Measurand
    value: float
    phase: Phase = Phase.NONE


def ingest_meter_values(s: DbSession, samples: Sequence[MeterSample]) -> int:
    """Store samples (duplicates ignored) and update latest readings; returns rows offered."""
    if not samples:
        return 0
    rows = [
        {
            "connector_pk": x.connector_pk,
            "measurand": int(x.measurand),
            "phase": int(x.phase),
            "ts": int(x.ts),
            "value": float(x.value),
        }
        for x in samples
    ]
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    s.execute(insert(MeterValue).on_conflict_do_nothing(), rows)
    _update_latest(s, samples)
    return len(rows)


def _update_latest(s: DbSession, samples: Sequence[MeterSample]) -> None:
    latest: dict[int, dict[str, tuple[int, float]]] = {}
    first_energy: dict[int, tuple[int, float]] = {}
    for x in samples:
        key = _LATEST.get(x.measurand)
        if key is None or x.phase != Phase.NONE:
            continue
        slot = latest.setdefault(x.connector_pk, {})
        if key not in slot or x.ts >= slot[key][0]:
            slot[key] = (x.ts, x.value)
        if key == "energy":
            seen = first_energy.get(x.connector_pk)
            if seen is None or x.ts < seen[0]:
                first_energy[x.connector_pk] = (x.ts, x.value)
    if not latest:
        return
    connectors = s.scalars(select(Connector).where(Connector.pk.in_(list(latest)))).all()
    sessions = {
        ses.connector_pk: ses
        for ses in s.scalars(
            select(Session).where(
                Session.connector_pk.in_(list(latest)),
                Session.status.in_(SessionStatus.open()),
            )
        )
    }
    for c in connectors:
        slot = latest[c.pk]
        ts = max(t for t, _ in slot.values())
        at = datetime.fromtimestamp(ts, UTC)
        if c.measured_at is not None and at < c.measured_at:
            continue  # an old value arriving late does not move the latest reading back
        c.measured_at = at
        if "power" in slot:
            c.power_kw = slot["power"][1] / 1000.0
        if "energy" in slot:
            c.energy_wh = slot["energy"][1]
        if "soc" in slot:
            c.soc_pct = slot["soc"][1]
        ses = sessions.get(c.pk)
        if ses is not None:
            _update_session(ses, c, first_energy.get(c.pk))


def _update_session(ses: Session, c: Connector, first_energy: tuple[int, float] | None) -> None:
    ses.power_kw = c.power_kw
    if c.soc_pct is not None:
        ses.soc_pct = c.soc_pct
    if c.energy_wh is not None:
        if ses.meter_start_wh is None:
            # No register reading before the session: its first reading is the start.
            ses.meter_start_wh = c.energy_wh if first_energy is None else first_energy[1]
        ses.energy_kwh = max(c.energy_wh - ses.meter_start_wh, 0.0) / 1000.0


def read_meter_values(
    s: DbSession,
    connector_pk: int,
    measurand: Measurand,
    *,
    start: datetime,
    end: datetime | None,
    phase: Phase = Phase.NONE,
    limit: int = 10_000,
) -> list[tuple[datetime, float]]:
    """``(time, value)`` of one connector's measurand in ``[start, end)`` (``end`` None: no
    end), oldest first."""
    q = select(MeterValue.ts, MeterValue.value).where(
        MeterValue.connector_pk == connector_pk,
        MeterValue.measurand == int(measurand),
        MeterValue.phase == int(phase),
        MeterValue.ts >= int(start.timestamp()),
    )
    if end is not None:
        q = q.where(MeterValue.ts < int(end.timestamp()))
    rows = s.execute(q.order_by(MeterValue.ts).limit(limit)).all()
    return [(datetime.fromtimestamp(ts, UTC), float(v)) for ts, v in rows]
