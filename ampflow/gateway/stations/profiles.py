"""Charging profiles as a charge point holds them: validation, stacking, the composite schedule.

Version-neutral: the 1.6 and 2.0.1 adapters parse their messages into :class:`Profile` and
format the results. The rules (OCPP 1.6 section 3.13, 2.0.1 block K):

* Purposes: the station maximum (1.6 ``ChargePointMaxProfile``, 2.0.1
  ``ChargingStationMaxProfile``) only on connector 0; ``TxDefaultProfile`` on 0 (each connector)
  or one connector; ``TxProfile`` only on a connector with a running transaction, and for that
  transaction.
* Within one purpose, the highest stack level valid at time ``t`` wins; a connector-specific
  TxDefault beats one on connector 0 at the same level.
* The effective limit is ``min(station maximum, TxProfile or else TxDefault, hardware)``; a
  connector's share of the station maximum is decided by the station (:mod:`.core`).
* ``A`` limits are per phase: the power is ``A * V * phases in use``, where the phases in use are
  ``min(numberPhases (default 3), phases wired)``, or every phase wired for a station with the
  ``ignores_number_phases`` quirk. ``W`` limits are total power.

Examples
--------
>>> from datetime import UTC, datetime
>>> t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
>>> cfg = StationConfig("CP-1", phases=3, voltage_v=230.0, max_kw=22.0)
>>> store = ProfileStore()
>>> p = Profile(1, 0, 0, Purpose.STATION_MAX, Kind.ABSOLUTE, "A",
...             (Period(0, 16.0), Period(3600, 10.0)), start_schedule=t0)
>>> check_profile(p, cfg, transactions={}, now=t0, strict=True) is None
True
>>> store.install(p, strict=True)
>>> round(store.limit_w(1, t0, cfg), 1)
11040.0
>>> round(store.limit_w(1, t0.replace(hour=9), cfg), 1)
6900.0
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ampflow.gateway.stations.config import Quirk, StationConfig

__all__ = [
    "Kind",
    "Period",
    "Profile",
    "ProfileStore",
    "Purpose",
    "Recurrency",
    "Rejection",
    "Tx",
    "check_profile",
]

_DAY_S = 86400


class Purpose(StrEnum):
    """Charging profile purpose (2.0.1 names; 1.6 calls the first ``ChargePointMaxProfile``)."""

    STATION_MAX = "ChargingStationMaxProfile"
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"


class Kind(StrEnum):
    """How a schedule is anchored in time."""

    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


class Recurrency(StrEnum):
    """Recurrence of a ``Recurring`` profile."""

    DAILY = "Daily"
    WEEKLY = "Weekly"


@dataclass(frozen=True, slots=True)
class Period:
    """One schedule period: from ``start_s`` after the schedule start, ``limit`` in the unit."""

    start_s: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """A charging profile with one schedule (version-neutral).

    ``connector`` is the 1.6 connector id or the 2.0.1 EVSE id; ``unit`` is ``"A"`` or ``"W"``;
    ``transaction_id`` is the transaction a TxProfile is for (None in 1.6 when omitted).
    """

    profile_id: int
    connector: int
    stack_level: int
    purpose: Purpose
    kind: Kind
    unit: str
    periods: tuple[Period, ...]
    start_schedule: datetime | None = None
    duration_s: int | None = None
    recurrency: Recurrency | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None
    min_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a profile was rejected: a short code (2.0.1 ``reasonCode``) and a sentence."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Tx:
    """A running transaction on a connector: its id and start (anchor of Relative profiles)."""

    transaction_id: str
    started_at: datetime


def check_profile(
    p: Profile,
    cfg: StationConfig,
    *,
    transactions: Mapping[int, Tx],
    now: datetime,
    strict: bool,
) -> Rejection | None:
    """Whether a station with ``cfg`` must reject ``p`` (None: it may install it).

    Parameters
    ----------
    p : Profile
    cfg : StationConfig
        Capabilities: connectors, units, periods, stack levels, quirks.
    transactions : mapping of int to Tx
        Running transaction per connector.
    now : datetime
        Station time (tz-aware).
    strict : bool
        Apply the 2.0.1 rules (TxProfile needs its transactionId, no Relative station maximum,
        Relative without and Absolute with ``startSchedule``).
    """
    if not 0 <= p.connector <= cfg.connectors:
        return Rejection("InvalidValue", f"connector {p.connector} does not exist")
    if p.unit not in cfg.rate_units:
        allowed = ",".join(cfg.rate_units)
        return Rejection("UnsupportedRateUnit", f"unit {p.unit!r} not in {allowed}")
    if len(p.periods) > cfg.max_periods:
        return Rejection(
            "InvalidSchedule", f"{len(p.periods)} periods > {cfg.max_periods} supported"
        )
    if not 0 <= p.stack_level <= cfg.max_stack_level:
        return Rejection(
            "InvalidStackLevel", f"stack level {p.stack_level} not in [0, {cfg.max_stack_level}]"
        )
    return (
        _check_schedule(p, strict=strict)
        or _check_purpose(p, transactions, strict=strict)
        or _check_validity(p, now)
    )


def _check_schedule(p: Profile, *, strict: bool) -> Rejection | None:
    starts = [q.start_s for q in p.periods]
    if not starts or starts[0] != 0:
        return Rejection("InvalidSchedule", "the first period must start at 0")
    if any(b <= a for a, b in itertools.pairwise(starts)):
        return Rejection("InvalidSchedule", "period starts must increase strictly")
    if any(not math.isfinite(q.limit) or q.limit < 0 for q in p.periods):
        return Rejection("InvalidValue", "limits must be finite and >= 0")
    if any(q.number_phases not in (None, 1, 2, 3) for q in p.periods):
        return Rejection("InvalidValue", "numberPhases must be 1, 2 or 3")
    if p.duration_s is not None and p.duration_s <= 0:
        return Rejection("InvalidSchedule", f"duration {p.duration_s} must be > 0")
    if p.kind is Kind.RECURRING and (p.recurrency is None or p.start_schedule is None):
        return Rejection("InvalidSchedule", "Recurring needs recurrencyKind and startSchedule")
    if p.kind is Kind.ABSOLUTE and p.start_schedule is None:
        return Rejection("InvalidSchedule", "Absolute needs startSchedule")
    if strict and p.kind is Kind.RELATIVE and p.start_schedule is not None:
        return Rejection("InvalidSchedule", "Relative must not have startSchedule")
    return None


def _check_purpose(p: Profile, transactions: Mapping[int, Tx], *, strict: bool) -> Rejection | None:
    if p.purpose is Purpose.STATION_MAX:
        if p.connector != 0:
            return Rejection("InvalidValue", "a station maximum profile must be on connector 0")
        if strict and p.kind is Kind.RELATIVE:
            return Rejection("InvalidProfile", "a station maximum profile cannot be Relative")
    if p.purpose is not Purpose.TX:
        if p.transaction_id is not None:
            return Rejection("InvalidValue", "only a TxProfile carries a transactionId")
        return None
    if p.connector == 0:
        return Rejection("InvalidValue", "a TxProfile needs a connector > 0")
    tx = transactions.get(p.connector)
    if tx is None:
        return Rejection("TxNotFound", f"no transaction on connector {p.connector}")
    if p.transaction_id is None and strict:
        return Rejection("TxNotFound", "a TxProfile must carry the transactionId")
    if p.transaction_id is not None and p.transaction_id != tx.transaction_id:
        return Rejection("TxNotFound", f"unknown transaction {p.transaction_id!r}")
    return None


def _check_validity(p: Profile, now: datetime) -> Rejection | None:
    if p.valid_to is not None and p.valid_to <= now:
        return Rejection("InvalidValue", "validTo is in the past")
    if p.valid_from is not None and p.valid_to is not None and p.valid_to <= p.valid_from:
        return Rejection("InvalidValue", "validTo must be after validFrom")
    return None


def _schedule_start(p: Profile, at: datetime, tx: Tx | None) -> datetime | None:
    if p.kind is Kind.RELATIVE:
        return None if tx is None else tx.started_at
    start = p.start_schedule
    if p.kind is Kind.ABSOLUTE or start is None:
        return start
    every = timedelta(seconds=_DAY_S if p.recurrency is Recurrency.DAILY else 7 * _DAY_S)
    n = (at - start) // every
    return start + max(n, 0) * every


def period_at(p: Profile, at: datetime, tx: Tx | None) -> Period | None:
    """The period of ``p`` in force at ``at``, or None if ``p`` does not apply then."""
    if (p.valid_from is not None and at < p.valid_from) or (
        p.valid_to is not None and at >= p.valid_to
    ):
        return None
    start = _schedule_start(p, at, tx)
    if start is None:
        return None
    offset = (at - start).total_seconds()
    if offset < 0 or (p.duration_s is not None and offset >= p.duration_s):
        return None
    current = None
    for q in p.periods:
        if q.start_s > offset:
            break
        current = q
    return current


def power_w(unit: str, q: Period, cfg: StationConfig) -> float:
    """A period's limit as power at a station [W] (see the module notes on phases)."""
    if unit == "W":
        return q.limit
    return q.limit * cfg.voltage_v * phases_in_use(q.number_phases, cfg)


def phases_in_use(number_phases: int | None, cfg: StationConfig) -> int:
    """Phases an A limit applies to at this station."""
    if Quirk.IGNORES_NUMBER_PHASES in cfg.quirks:
        return cfg.phases
    return min(3 if number_phases is None else number_phases, cfg.phases)


def _overlap(a: Profile, b: Profile) -> bool:
    """Whether the validity windows of ``a`` and ``b`` intersect (None is unbounded)."""
    if a.valid_to is not None and b.valid_from is not None and a.valid_to <= b.valid_from:
        return False
    return not (b.valid_to is not None and a.valid_from is not None and b.valid_to <= a.valid_from)


class ProfileStore:
    """The profiles a station holds, by id; answers what limit applies when."""

    def __init__(self) -> None:
        self._by_id: dict[int, Profile] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Profile]:
        return iter(sorted(self._by_id.values(), key=lambda p: p.profile_id))

    def conflict(self, p: Profile, *, strict: bool, max_profiles: int) -> Rejection | None:
        """Whether installing ``p`` breaks the stack rules or the station's capacity."""
        replaced = self._replaced(p, strict=strict)
        if strict:
            for old in self._by_id.values():
                same = (old.purpose, old.connector, old.stack_level) == (
                    p.purpose,
                    p.connector,
                    p.stack_level,
                )
                if (
                    same
                    and old.profile_id not in replaced
                    and old.transaction_id == p.transaction_id
                    and _overlap(old, p)
                ):
                    return Rejection(
                        "DuplicateProfile",
                        f"profile {old.profile_id} has the same purpose and stack level",
                    )
        if len(self._by_id) - len(replaced) + 1 > max_profiles:
            return Rejection("NoCapacity", f"at most {max_profiles} profiles can be installed")
        return None

    def _replaced(self, p: Profile, *, strict: bool) -> set[int]:
        out = {p.profile_id} & self._by_id.keys()
        if not strict:  # 1.6: the same stack level and purpose on a connector replaces too
            out |= {
                old.profile_id
                for old in self._by_id.values()
                if (old.purpose, old.connector, old.stack_level)
                == (p.purpose, p.connector, p.stack_level)
            }
        return out

    def install(self, p: Profile, *, strict: bool) -> None:
        """Install ``p``, replacing what it replaces (same id; in 1.6 also same level/purpose)."""
        for pid in self._replaced(p, strict=strict):
            del self._by_id[pid]
        self._by_id[p.profile_id] = p

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> int:
        """Remove the profile with ``profile_id``, or those matching every criterion given
        (all when none is given). Returns how many were removed."""
        if profile_id is not None:
            return 1 if self._by_id.pop(profile_id, None) is not None else 0
        gone = [
            pid
            for pid, p in self._by_id.items()
            if (connector is None or p.connector == connector)
            and (purpose is None or p.purpose is purpose)
            and (stack_level is None or p.stack_level == stack_level)
        ]
        for pid in gone:
            del self._by_id[pid]
        return len(gone)

    def winner(
        self, purpose: Purpose, connector: int, at: datetime, tx: Tx | None
    ) -> tuple[Profile, Period] | None:
        """The profile of ``purpose`` in force for ``connector`` at ``at``, with its period."""
        best: tuple[tuple[int, int], Profile, Period] | None = None
        for p in self._by_id.values():
            if p.purpose is not purpose or p.connector not in (0, connector):
                continue
            if purpose is Purpose.TX and (
                tx is None
                or p.connector != connector
                or p.transaction_id not in (None, tx.transaction_id)
            ):
                continue
            q = period_at(p, at, tx)
            if q is None:
                continue
            rank = (p.stack_level, int(p.connector == connector))
            if best is None or rank > best[0]:
                best = (rank, p, q)
        return None if best is None else (best[1], best[2])

    def limit_w(
        self, connector: int, at: datetime, cfg: StationConfig, tx: Tx | None = None
    ) -> float:
        """The composite limit of ``connector`` at ``at`` [W]: min(station maximum, TxProfile
        or TxDefault, hardware). Connector 0 gives the station maximum (or the hardware's)."""
        return self.limit(connector, at, cfg, tx)[0]

    def limit(
        self, connector: int, at: datetime, cfg: StationConfig, tx: Tx | None = None
    ) -> tuple[float, int]:
        """The composite limit [W] and the phases the connector charges on (those of the
        connector's own TxProfile or TxDefault period, else every phase wired)."""
        hw = (cfg.station_limit_kw if connector == 0 else cfg.max_kw) * 1000.0
        limit, phases = hw, cfg.phases
        top = self.winner(Purpose.STATION_MAX, 0, at, None)
        if top is not None:
            limit = min(limit, power_w(top[0].unit, top[1], cfg))
        if connector == 0:
            return limit, phases
        own = self.winner(Purpose.TX, connector, at, tx) if tx is not None else None
        if own is None:
            own = self.winner(Purpose.TX_DEFAULT, connector, at, tx)
        if own is not None:
            limit = min(limit, power_w(own[0].unit, own[1], cfg))
            phases = phases_in_use(own[1].number_phases, cfg)
        return limit, phases

    def breakpoints(self, t0: datetime, t1: datetime, tx: Tx | None) -> list[datetime]:
        """Instants in ``(t0, t1)`` where some profile's limit may change, sorted."""
        out: set[datetime] = set()
        for p in self._by_id.values():
            out.update(_edges(p, t0, t1, tx))
        return sorted(t for t in out if t0 < t < t1)

    def next_change(self, t0: datetime, horizon_s: float, tx: Tx | None) -> datetime | None:
        """The first instant after ``t0`` (within ``horizon_s``) where a limit may change."""
        points = self.breakpoints(t0, t0 + timedelta(seconds=horizon_s), tx)
        return points[0] if points else None

    def drop_expired(self, now: datetime) -> int:
        """Forget profiles whose ``validTo`` has passed; returns how many."""
        gone = [
            pid for pid, p in self._by_id.items() if p.valid_to is not None and p.valid_to <= now
        ]
        for pid in gone:
            del self._by_id[pid]
        return len(gone)

    def snapshot(self) -> tuple[Profile, ...]:
        """The installed profiles, by id (a copy, for persistence across a reboot)."""
        return tuple(self)

    def restore(self, profiles: Iterable[Profile]) -> None:
        """Replace the contents with ``profiles``."""
        self._by_id = {p.profile_id: replace(p) for p in profiles}


def _edges(p: Profile, t0: datetime, t1: datetime, tx: Tx | None) -> Iterator[datetime]:
    for t in (p.valid_from, p.valid_to):
        if t is not None:
            yield t
    if p.kind is Kind.RECURRING and p.start_schedule is not None:
        every = _DAY_S if p.recurrency is Recurrency.DAILY else 7 * _DAY_S
        start: datetime | None = _schedule_start(p, t0, tx)
        starts: list[datetime] = []
        while start is not None and start < t1 and len(starts) < 64:
            starts.append(start)
            start += timedelta(seconds=every)
    else:
        one = _schedule_start(p, t0, tx)
        starts = [] if one is None else [one]
    for s in starts:
        for q in p.periods:
            yield s + timedelta(seconds=q.start_s)
        if p.duration_s is not None:
            yield s + timedelta(seconds=p.duration_s)
