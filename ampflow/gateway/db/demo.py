"""The demo behind ``ampflow serve --demo``: the Caltech garage, its TOU prices, EVs, demo keys.

* Site ``caltech``: the ACN garage model (54 single-phase 208 V EVSEs on two panels, a 150 kW
  grid connection; :func:`ampflow.scenarios.acn.caltech_site`) in ``America/Los_Angeles``.
* Prices: the bundled Caltech scenario's time-of-use tariff
  (:func:`ampflow.scenarios.acn.caltech_tou_price`) for the next seven days.
* Sessions: the EVs of a real morning (ACN-Data, 2019-10-29) plugged in now, with their real
  delivered energy as target and their real stay as departure time.
* Keys: one per role; previous demo keys are revoked, and the new tokens are returned to be
  printed once.

Seeding is idempotent: an existing site, current prices or open sessions are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import Role, SessionStatus, SignalKind, utcnow
from ampflow.gateway.db.database import Database
from ampflow.gateway.db.models import ApiKey, Session, Signal, Site
from ampflow.gateway.db.repo import keys, sessions, signals, sites
from ampflow.scenarios.acn import CALTECH_TZ, acn_path, caltech_site, caltech_tou_price, read_acn

__all__ = ["DEMO_SITE", "DemoSeed", "seed_demo"]

DEMO_SITE = "caltech"
DEMO_TZ = "America/Los_Angeles"
_DEMO_DAY = "2019-10-29"
_PRICE_STEP_S = 900


@dataclass(frozen=True)
class DemoSeed:
    """What seeding did, and the new demo keys (role -> token)."""

    created_site: bool
    price_series: str | None
    sessions: int
    keys: dict[str, str]


def seed_demo(
    db: Database, *, pepper: bytes, now: datetime | None = None, n_evs: int = 16
) -> DemoSeed:
    """Seed the demo site, prices, EVs and keys (see the module notes)."""
    now = now or utcnow()
    with db.write() as s:
        created = s.scalar(select(Site.pk).where(Site.id == DEMO_SITE)) is None
        if created:
            sites.create_site(
                s,
                caltech_site(DEMO_SITE, import_kw=150.0),
                sites.SiteInfo(
                    name="Caltech ACN garage (demo)",
                    timezone=DEMO_TZ,  # the same zone as CALTECH_TZ, by its canonical name
                    min_import_kw=5.0,
                    demand_charge_per_kw=15.0,
                    currency="USD",
                ),
            )
        series = _seed_prices(s, now)
        n = _seed_sessions(s, now, n_evs)
        tokens = _seed_keys(s, pepper)
    return DemoSeed(created, series, n, tokens)


def _seed_prices(s: DbSession, now: datetime) -> str | None:
    covered = s.scalar(
        select(Signal.id).where(
            Signal.kind == SignalKind.IMPORT_PRICE.value,
            Signal.status == "active",
            Signal.start_at <= now,
            Signal.end_at > now + timedelta(days=1),
        )
    )
    if covered is not None:
        return None
    start = pd.Timestamp(now).tz_convert(CALTECH_TZ).normalize().tz_convert("UTC")
    n_steps = 7 * 86400 // _PRICE_STEP_S
    price = caltech_tou_price(start, n_steps, _PRICE_STEP_S)
    starts = [start + pd.Timedelta(seconds=_PRICE_STEP_S * k) for k in range(n_steps)]
    intervals = [
        signals.IntervalSpec(
            t.to_pydatetime(),
            (t + pd.Timedelta(seconds=_PRICE_STEP_S)).to_pydatetime(),
            float(p),
        )
        for t, p in zip(starts, price, strict=True)
    ]
    sig = signals.create_signal(
        s,
        site_id=DEMO_SITE,
        kind=SignalKind.IMPORT_PRICE,
        intervals=intervals,
        currency="USD",
    )
    return sig.id


def _seed_sessions(s: DbSession, now: datetime, n_evs: int) -> int:
    site = sites.get_site(s, DEMO_SITE)
    open_sessions = s.scalar(
        select(Session.pk).where(
            Session.site_pk == site.pk, Session.status.in_(SessionStatus.open())
        )
    )
    if open_sessions is not None:
        return 0
    df = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    day = pd.Timestamp(_DEMO_DAY, tz=CALTECH_TZ)
    rows = df[(df.arrival >= day) & (df.arrival < day + pd.Timedelta(hours=10))]
    rows = rows.drop_duplicates("station_id").head(n_evs)
    stay_s = ((rows.departure - rows.arrival).dt.total_seconds()).to_numpy(dtype=float)
    energy = rows.energy_kwh.to_numpy(dtype=float)
    stations = [str(x) for x in rows.station_id]
    count = 0
    for station, stay, kwh in zip(stations, stay_s, energy, strict=True):
        sessions.start_session(
            s,
            connector_id=f"{DEMO_SITE}/{station}/1",
            started_at=now,
            id_token=f"ACN-{count:03d}",
            targets={
                "energy_target_kwh": round(float(kwh), 3),
                "departure_at": now + timedelta(seconds=max(float(stay), 1800.0)),
                "ev_max_kw": 6.656,
            },
        )
        count += 1
    return count


def _seed_keys(s: DbSession, pepper: bytes) -> dict[str, str]:
    for old in s.scalars(select(ApiKey).where(ApiKey.name.like("demo-%"))):
        if old.revoked_at is None:
            old.revoked_at = utcnow()
    tokens = {}
    for role in Role:
        scope = [DEMO_SITE] if role in (Role.SITE_MANAGER, Role.UTILITY) else []
        _, token = keys.create_api_key(
            s, role=role, pepper=pepper, site_ids=scope, name=f"demo-{role.value}"
        )
        tokens[role.value] = token
    return tokens
