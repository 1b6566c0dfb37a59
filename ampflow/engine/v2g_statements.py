"""V2G statements per driver-month and per site-month (the site against the utility).

:func:`driver_statements` and :func:`site_statements` roll the session statements of
:func:`ampflow.engine.settlement.settle_session` up by the calendar month of the session end in
a time zone. Every figure is an exact sum of session lines, so the month reconciles whenever the
sessions do: metered export equals settled export, and the utility's, site's and driver's
balances sum to zero (the site and the drivers share exactly the grid payment).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ampflow.engine.periods import zone
from ampflow.engine.settlement import (
    LineKind,
    Party,
    SessionStatement,
    SettlementError,
    SettlementLine,
)

__all__ = ["DriverStatement", "SiteStatement", "driver_statements", "site_statements"]

_ZERO = Decimal(0)


def _by_kind(lines: Iterable[SettlementLine]) -> dict[LineKind, tuple[Decimal, Decimal]]:
    """(quantity, amount) summed per kind, in ``LineKind`` order."""
    out: dict[LineKind, tuple[Decimal, Decimal]] = {}
    for ln in lines:
        q, a = out.get(ln.kind, (_ZERO, _ZERO))
        out[ln.kind] = (q + ln.quantity, a + ln.amount)
    return {k: out[k] for k in LineKind if k in out}


def _kinds_dict(kinds: dict[LineKind, tuple[Decimal, Decimal]]) -> dict[str, Any]:
    return {k.value: {"quantity": q, "amount": a} for k, (q, a) in kinds.items()}


@dataclass(frozen=True)
class DriverStatement:
    """A driver's V2G month: the sessions and what the site paid them, per kind.

    ``totals`` maps each line kind to (quantity, amount); ``net`` is the driver's balance.
    """

    driver_id: str
    year: int
    month: int
    currency: str
    sessions: tuple[SessionStatement, ...]
    totals: dict[LineKind, tuple[Decimal, Decimal]] = field(compare=False)
    export_kwh: Decimal
    net: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver_id": self.driver_id,
            "month": f"{self.year:04d}-{self.month:02d}",
            "currency": self.currency,
            "sessions": [s.session_id for s in self.sessions],
            "export_kwh": self.export_kwh,
            "totals": _kinds_dict(self.totals),
            "net": self.net,
        }


@dataclass(frozen=True)
class SiteStatement:
    """A site's V2G month against the utility, with what it passed on to drivers.

    Attributes
    ----------
    grid : dict
        Utility-to-site lines per kind: (quantity, amount).
    payouts : dict
        Site-to-driver lines per kind: (quantity, amount).
    metered_export_kwh, settled_export_kwh : Decimal
    grid_payment, driver_payout, site_net, utility_net : Decimal
        ``utility_net + site_net + driver_payout == 0`` and
        ``site_net + driver_payout == grid_payment``.
    """

    site_id: str
    year: int
    month: int
    currency: str
    sessions: tuple[SessionStatement, ...]
    grid: dict[LineKind, tuple[Decimal, Decimal]] = field(compare=False)
    payouts: dict[LineKind, tuple[Decimal, Decimal]] = field(compare=False)
    metered_export_kwh: Decimal
    settled_export_kwh: Decimal
    grid_payment: Decimal
    driver_payout: Decimal
    site_net: Decimal
    utility_net: Decimal

    @property
    def reconciles(self) -> bool:
        """Metered export was all settled and the three parties' balances sum to zero."""
        return (
            self.metered_export_kwh == self.settled_export_kwh
            and self.utility_net + self.site_net + self.driver_payout == 0
            and self.site_net + self.driver_payout == self.grid_payment
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "month": f"{self.year:04d}-{self.month:02d}",
            "currency": self.currency,
            "sessions": [s.session_id for s in self.sessions],
            "metered_export_kwh": self.metered_export_kwh,
            "settled_export_kwh": self.settled_export_kwh,
            "grid": _kinds_dict(self.grid),
            "payouts": _kinds_dict(self.payouts),
            "grid_payment": self.grid_payment,
            "driver_payout": self.driver_payout,
            "site_net": self.site_net,
            "utility_net": self.utility_net,
            "reconciles": self.reconciles,
        }


def _months(
    statements: Iterable[SessionStatement], time_zone: str, owner: str
) -> dict[tuple[int, int, str, str], list[SessionStatement]]:
    """Statements grouped by (year, month, owner id, currency), the month of the session end."""
    tz = zone(time_zone)
    groups: dict[tuple[int, int, str, str], list[SessionStatement]] = defaultdict(list)
    seen: set[str] = set()
    for st in statements:
        if st.session_id in seen:
            raise SettlementError(
                f"statements: expected each session once, got {st.session_id!r} again"
            )
        seen.add(st.session_id)
        local = st.end.astimezone(tz)
        groups[(local.year, local.month, getattr(st, owner), st.currency)].append(st)
    return dict(sorted(groups.items()))


def driver_statements(
    statements: Iterable[SessionStatement], *, time_zone: str = "UTC"
) -> list[DriverStatement]:
    """Session statements rolled up per driver and month (of the session end, in ``time_zone``)."""
    out = []
    for (year, month, driver, currency), group in _months(
        statements, time_zone, "driver_id"
    ).items():
        lines = [ln for st in group for ln in st.lines if Party.DRIVER in (ln.payer, ln.payee)]
        out.append(
            DriverStatement(
                driver,
                year,
                month,
                currency,
                tuple(group),
                _by_kind(lines),
                sum((st.metered_export_kwh for st in group), _ZERO),
                sum((ln.net(Party.DRIVER) for ln in lines), _ZERO),
            )
        )
    return out


def site_statements(
    statements: Iterable[SessionStatement], *, time_zone: str = "UTC"
) -> list[SiteStatement]:
    """Session statements rolled up per site and month: the site against the utility."""
    out = []
    for (year, month, site, currency), group in _months(statements, time_zone, "site_id").items():
        lines = [ln for st in group for ln in st.lines]
        grid = [ln for ln in lines if ln.payer is Party.UTILITY]
        payouts = [ln for ln in lines if ln.payee is Party.DRIVER]
        grid_payment = sum((ln.amount for ln in grid), _ZERO)
        driver_payout = sum((ln.amount for ln in payouts), _ZERO)
        out.append(
            SiteStatement(
                site,
                year,
                month,
                currency,
                tuple(group),
                _by_kind(grid),
                _by_kind(payouts),
                sum((st.metered_export_kwh for st in group), _ZERO),
                sum((st.settled_export_kwh for st in group), _ZERO),
                grid_payment,
                driver_payout,
                sum((ln.net(Party.SITE) for ln in lines), _ZERO),
                sum((ln.net(Party.UTILITY) for ln in lines), _ZERO),
            )
        )
    return out
