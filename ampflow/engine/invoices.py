"""Invoices per token (or driver contract) and month, one line per CDR, as dicts and CSV text.

:func:`build_invoices` groups OCPI CDR JSON objects (as produced by
:func:`ampflow.engine.cdr.build_cdr`, or read back from storage) by holder, month and currency.
A Credit CDR is a line of its own with negative amounts, in the month it was issued, so an
invoice that was sent is never changed: a correction shows up as a credit (and a new CDR) on a
later invoice. By default a CDR belongs to the month of its ``last_updated`` (when it was issued)
in the CPO's ``time_zone``; ``month_of="session_end"`` uses the session's end instead.

Amounts are the CDRs' own (already rounded to the currency by the CDR); the invoice total is their
exact sum. ``total.incl_vat`` is ``None`` when a line has no amount including VAT.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from ampflow.engine.cdr import ocpi_datetime
from ampflow.engine.errors import AmpflowError
from ampflow.engine.periods import zone
from ampflow.engine.tariffs import Price, TariffError, parse_ocpi_datetime

__all__ = ["Invoice", "InvoiceError", "InvoiceKey", "InvoiceLine", "build_invoices", "invoices_csv"]

_ZERO = Decimal(0)
CSV_COLUMNS = (
    "invoice_id",
    "holder",
    "month",
    "currency",
    "cdr_id",
    "credit",
    "credit_reference_id",
    "session_id",
    "start_date_time",
    "end_date_time",
    "location_id",
    "evse_id",
    "energy_kwh",
    "time_h",
    "parking_time_h",
    "cost_excl_vat",
    "cost_incl_vat",
)


class InvoiceError(AmpflowError):
    """A CDR cannot be invoiced (names the CDR, the field, its value and what was expected)."""


class InvoiceKey(StrEnum):
    """Whom an invoice is for: a token (``cdr_token.uid``) or a driver's contract
    (``cdr_token.contract_id``, which may span several tokens)."""

    TOKEN = "token"
    CONTRACT = "contract"


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One CDR on an invoice; quantities in kWh and hours, ``cost`` in the invoice currency."""

    cdr_id: str
    credit: bool
    credit_reference_id: str | None
    session_id: str | None
    start: datetime
    end: datetime
    location_id: str
    evse_id: str
    energy_kwh: Decimal
    time_h: Decimal
    parking_time_h: Decimal
    cost: Price

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (numbers are ``Decimal``)."""
        return {
            "cdr_id": self.cdr_id,
            "credit": self.credit,
            "credit_reference_id": self.credit_reference_id,
            "session_id": self.session_id,
            "start_date_time": ocpi_datetime(self.start),
            "end_date_time": ocpi_datetime(self.end),
            "location_id": self.location_id,
            "evse_id": self.evse_id,
            "energy_kwh": self.energy_kwh,
            "time_h": self.time_h,
            "parking_time_h": self.parking_time_h,
            "cost": _price_dict(self.cost),
        }


@dataclass(frozen=True)
class Invoice:
    """The CDRs of one holder in one month and currency.

    Attributes
    ----------
    key : InvoiceKey
    holder : str
        The token uid or contract id.
    year, month : int
    currency : str
    lines : tuple of InvoiceLine
        In time order (then by CDR id).
    total : Price
        Exact sum of the lines' costs [currency].
    """

    key: InvoiceKey
    holder: str
    year: int
    month: int
    currency: str
    lines: tuple[InvoiceLine, ...]
    total: Price

    @property
    def invoice_id(self) -> str:
        """A stable id: ``{holder}-{YYYY}{MM}-{currency}``."""
        return f"{self.holder}-{self.year:04d}{self.month:02d}-{self.currency}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (numbers are ``Decimal``)."""
        return {
            "invoice_id": self.invoice_id,
            "key": self.key.value,
            "holder": self.holder,
            "month": f"{self.year:04d}-{self.month:02d}",
            "currency": self.currency,
            "lines": [line.to_dict() for line in self.lines],
            "total": _price_dict(self.total),
        }

    def to_csv(self) -> str:
        """The invoice's lines as CSV text with a header row (see :func:`invoices_csv`)."""
        return invoices_csv([self])


def _price_dict(price: Price) -> dict[str, Any]:
    out: dict[str, Any] = {"excl_vat": price.excl_vat}
    if price.incl_vat is not None:
        out["incl_vat"] = price.incl_vat
    return out


def invoices_csv(invoices: Iterable[Invoice]) -> str:
    """CSV text, one row per invoice line, columns :data:`CSV_COLUMNS`; an unknown amount
    including VAT is an empty cell.

    Examples
    --------
    >>> invoices_csv([]).strip()
    'invoice_id,holder,month,currency,cdr_id,credit,credit_reference_id,session_id,start_date_time,end_date_time,location_id,evse_id,energy_kwh,time_h,parking_time_h,cost_excl_vat,cost_incl_vat'
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for inv in invoices:
        for ln in inv.lines:
            incl = ln.cost.incl_vat
            writer.writerow(
                [
                    inv.invoice_id,
                    inv.holder,
                    f"{inv.year:04d}-{inv.month:02d}",
                    inv.currency,
                    ln.cdr_id,
                    "true" if ln.credit else "false",
                    ln.credit_reference_id or "",
                    ln.session_id or "",
                    ocpi_datetime(ln.start),
                    ocpi_datetime(ln.end),
                    ln.location_id,
                    ln.evse_id,
                    format(ln.energy_kwh, "f"),
                    format(ln.time_h, "f"),
                    format(ln.parking_time_h, "f"),
                    format(ln.cost.excl_vat, "f"),
                    "" if incl is None else format(incl, "f"),
                ]
            )
    return out.getvalue()


class _Reader:
    """Reads fields of one CDR, naming the CDR and the field in errors."""

    def __init__(self, cdr: object, index: int) -> None:
        if not isinstance(cdr, Mapping):
            raise InvoiceError(f"cdrs[{index}]: expected a CDR JSON object, got {cdr!r}")
        self.cdr = cdr
        self.where = f"cdrs[{index}] (id {cdr.get('id')!r})"

    def get(self, *path: str, required: bool = True) -> Any:
        node: Any = self.cdr
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None and required:
            raise InvoiceError(f"{self.where}.{'.'.join(path)}: expected a value, got nothing")
        return node

    def opt_text(self, *path: str) -> str | None:
        value = self.get(*path, required=False)
        return None if value is None else self.text(*path)

    def text(self, *path: str) -> str:
        value = self.get(*path)
        if not isinstance(value, str):
            raise InvoiceError(f"{self.where}.{'.'.join(path)}: expected a string, got {value!r}")
        return value

    def number(self, *path: str, default: Decimal | None = None) -> Decimal:
        value = self.get(*path, required=default is None)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
            raise InvoiceError(f"{self.where}.{'.'.join(path)}: expected a number, got {value!r}")
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            raise InvoiceError(f"{self.where}.{'.'.join(path)}: expected a finite number")
        return number

    def time(self, name: str) -> datetime:
        try:
            return parse_ocpi_datetime(self.get(name), name)
        except TariffError as err:
            raise InvoiceError(f"{self.where}.{err}") from None


def _line(r: _Reader) -> InvoiceLine:
    incl = r.get("total_cost", "incl_vat", required=False)
    return InvoiceLine(
        cdr_id=r.text("id"),
        credit=bool(r.get("credit", required=False)),
        credit_reference_id=r.opt_text("credit_reference_id"),
        session_id=r.opt_text("session_id"),
        start=r.time("start_date_time"),
        end=r.time("end_date_time"),
        location_id=r.text("cdr_location", "id"),
        evse_id=r.text("cdr_location", "evse_id"),
        energy_kwh=r.number("total_energy"),
        time_h=r.number("total_time"),
        parking_time_h=r.number("total_parking_time", default=_ZERO),
        cost=Price(
            r.number("total_cost", "excl_vat"),
            None if incl is None else r.number("total_cost", "incl_vat"),
        ),
    )


def build_invoices(
    cdrs: Iterable[Mapping[str, Any]],
    *,
    time_zone: str = "UTC",
    key: InvoiceKey = InvoiceKey.TOKEN,
    month_of: Literal["issued", "session_end"] = "issued",
) -> list[Invoice]:
    """Group CDRs into invoices per holder, month and currency.

    Parameters
    ----------
    cdrs : iterable of mapping
        OCPI 2.2.1 CDR JSON objects, credits included; each id at most once.
    time_zone : str, default "UTC"
        The zone whose calendar months are invoiced.
    key : InvoiceKey, default TOKEN
    month_of : {"issued", "session_end"}
        Invoice a CDR in the month of its ``last_updated`` or of its ``end_date_time``.

    Returns
    -------
    list of Invoice
        Sorted by month, holder and currency.

    Raises
    ------
    InvoiceError
        For a CDR missing a field the invoice needs, or a repeated CDR id.
    """
    tz = zone(time_zone)
    if month_of not in ("issued", "session_end"):
        raise InvoiceError(f"month_of: expected 'issued' or 'session_end', got {month_of!r}")
    try:
        key = InvoiceKey(key)
    except ValueError:
        raise InvoiceError(f"key: expected one of {', '.join(InvoiceKey)}, got {key!r}") from None
    groups: dict[tuple[int, int, str, str], list[InvoiceLine]] = defaultdict(list)
    seen: set[str] = set()
    for index, cdr in enumerate(cdrs):
        r = _Reader(cdr, index)
        line = _line(r)
        if line.cdr_id in seen:
            raise InvoiceError(f"{r.where}.id: expected each CDR once, got {line.cdr_id!r} again")
        seen.add(line.cdr_id)
        holder = r.text("cdr_token", "uid" if key is InvoiceKey.TOKEN else "contract_id")
        currency = r.text("currency")
        when = r.time("last_updated") if month_of == "issued" else line.end
        local = when.astimezone(tz)
        groups[(local.year, local.month, holder, currency)].append(line)
    invoices = []
    for (year, month, holder, currency), lines in sorted(groups.items()):
        lines.sort(key=lambda ln: (ln.start, ln.cdr_id))
        incls = [ln.cost.incl_vat for ln in lines]
        total = Price(
            sum((ln.cost.excl_vat for ln in lines), _ZERO),
            None if None in incls else sum((i for i in incls if i is not None), _ZERO),
        )
        invoices.append(Invoice(key, holder, year, month, currency, tuple(lines), total))
    return invoices
