"""Charging stations: registration with hashed credentials, status, capabilities, last contact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.crypto import hash_password, verify_password
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import Charger, Connector, Site, Station

__all__ = [
    "StationRow",
    "check_station_password",
    "get_station",
    "list_stations",
    "register_station",
    "station_connectors",
    "update_station",
]


@dataclass(frozen=True)
class StationRow:
    """A station with the public ids of its site and charger."""

    station: Station
    site_id: str
    charger_id: str | None


def _charger(s: DbSession, site: Site, charger_id: str) -> Charger:
    charger = s.scalar(select(Charger).where(Charger.site_pk == site.pk, Charger.id == charger_id))
    if charger is None:
        raise ConflictError(
            f"site {site.id!r} has no charger {charger_id!r}", loc=("body", "charger_id")
        )
    taken = s.scalar(select(Station.id).where(Station.charger_pk == charger.pk))
    if taken is not None:
        raise ConflictError(
            f"charger {charger_id!r} is already station {taken!r}", loc=("body", "charger_id")
        )
    return charger


def register_station(
    s: DbSession,
    *,
    station_id: str,
    site_id: str,
    charger_id: str | None = None,
    password: str | None = None,
) -> StationRow:
    """Register a station (OCPP identity ``station_id``), optionally bound to a charger.

    Raises
    ------
    ConflictError
        For a duplicate station id, an unknown site or charger, or a charger already bound.
    """
    if s.scalar(select(Station.pk).where(Station.id == station_id)) is not None:
        raise ConflictError(f"station id {station_id!r} already exists", loc=("body", "id"))
    site = s.scalar(select(Site).where(Site.id == site_id))
    if site is None:
        raise ConflictError(f"site {site_id!r} does not exist", loc=("body", "site_id"))
    charger = None if charger_id is None else _charger(s, site, charger_id)
    station = Station(
        id=station_id,
        site_pk=site.pk,
        charger_pk=None if charger is None else charger.pk,
        password_hash=None if password is None else hash_password(password),
        quirks=[],
        flags=[],
    )
    s.add(station)
    s.flush()
    return StationRow(station, site_id, charger_id)


def get_station(s: DbSession, station_id: str) -> StationRow:
    """A station by id. Raises NotFoundError."""
    row = s.execute(
        select(Station, Site.id, Charger.id)
        .join(Site, Site.pk == Station.site_pk)
        .outerjoin(Charger, Charger.pk == Station.charger_pk)
        .where(Station.id == station_id)
    ).first()
    if row is None:
        raise NotFoundError(f"no station {station_id!r}", loc=("path", "station_id"))
    return StationRow(row[0], row[1], row[2])


def list_stations(s: DbSession, *, site_ids: Sequence[str] | None = None) -> list[StationRow]:
    """Stations by id, optionally of some sites."""
    q = (
        select(Station, Site.id, Charger.id)
        .join(Site, Site.pk == Station.site_pk)
        .outerjoin(Charger, Charger.pk == Station.charger_pk)
        .order_by(Station.id)
    )
    if site_ids is not None:
        q = q.where(Site.id.in_(list(site_ids)))
    return [StationRow(a, b, c) for a, b, c in s.execute(q).all()]


def update_station(s: DbSession, station_id: str, changes: Mapping[str, Any]) -> StationRow:
    """Rotate the password, (re)bind to a charger of its site, or set quirks."""
    row = get_station(s, station_id)
    station = row.station
    charger_id = row.charger_id
    for key, value in changes.items():
        if key == "password":
            station.password_hash = None if value is None else hash_password(value)
        elif key == "charger_id":
            if value == charger_id:
                continue
            if value is None:
                station.charger_pk = None
            else:
                site = s.get_one(Site, station.site_pk)
                station.charger_pk = _charger(s, site, value).pk
            charger_id = value
        elif key == "quirks":
            station.quirks = list(value)
        else:
            raise ValueError(f"update_station: unknown field {key!r}")
    s.flush()
    return StationRow(station, row.site_id, charger_id)


def station_connectors(s: DbSession, station: Station) -> list[Connector]:
    """The connectors of the station's charger (none if it is not bound)."""
    if station.charger_pk is None:
        return []
    return list(
        s.scalars(
            select(Connector)
            .where(Connector.charger_pk == station.charger_pk)
            .order_by(Connector.number)
        )
    )


def check_station_password(s: DbSession, station_id: str, password: str) -> bool:
    """Whether a station's HTTP Basic password is right (False for unknown stations)."""
    stored = s.scalar(select(Station.password_hash).where(Station.id == station_id))
    return stored is not None and verify_password(password, stored)
