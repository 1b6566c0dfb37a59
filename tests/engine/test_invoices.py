"""Invoices per token/contract and month, lines per CDR, credits included, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from ampflow.engine.cdr import AuthMethod, CdrContext, CdrToken, build_cdr, credit_cdr, ocpi_json
from ampflow.engine.invoices import InvoiceError, InvoiceKey, build_invoices
from ampflow.engine.pricing import price_session
from ampflow.engine.tariffs import Price
from tests.engine.billing import component, tariff, usage

D = Decimal
TARIFF = tariff(
    [{"price_components": [component("ENERGY", 0.30, vat=21), component("FLAT", 1, vat=21)]}]
)


def cdr(
    cdr_id: str, uid: str, start: datetime, kwh: str, *, contract: str = "C-1"
) -> dict[str, Any]:
    priced = price_session(TARIFF, usage(start, [(120, kwh)]), time_zone="Europe/Amsterdam")
    ctx = CdrContext(
        cdr_id,
        "NL",
        "AMP",
        f"s-{cdr_id}",
        CdrToken(uid, contract),
        AuthMethod.WHITELIST,
        "depot",
        "cp-1",
        "NL*AMP*E1",
        "1",
    )
    return build_cdr(priced, ctx, last_updated=priced.stop + timedelta(minutes=1))


def sample() -> list[dict[str, Any]]:
    march = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
    cdrs = [
        cdr("c1", "TOKEN-A", march, "10"),  # 3.00 + 1.00 = 4.00 excl, 4.84 incl
        cdr("c2", "TOKEN-A", march + timedelta(days=5), "20"),  # 7.00 / 8.47
        cdr("c3", "TOKEN-A", datetime(2026, 4, 2, 8, 0, tzinfo=UTC), "5"),  # 2.50 / 3.025->3.03
        cdr("c4", "TOKEN-B", march, "1", contract="C-1"),  # 1.30 / 1.573->1.57
    ]
    credit, _ = credit_cdr(
        cdrs[1], last_updated=datetime(2026, 4, 3, tzinfo=UTC), actor="admin", reason="double count"
    )
    # the corrected CDR, re-issued in April: 4.00 / 4.84
    corrected = cdr("c2b", "TOKEN-A", march + timedelta(days=5), "10")
    corrected["last_updated"] = "2026-04-03T00:00:01Z"
    return [*cdrs, credit, corrected]


def test_invoices_per_token_and_month() -> None:
    invoices = build_invoices(sample(), time_zone="Europe/Amsterdam")
    summary = [(i.invoice_id, [ln.cdr_id for ln in i.lines], i.total) for i in invoices]
    assert summary == [
        ("TOKEN-A-202603-EUR", ["c1", "c2"], Price(D("11.00"), D("13.31"))),
        ("TOKEN-B-202603-EUR", ["c4"], Price(D("1.30"), D("1.57"))),
        ("TOKEN-A-202604-EUR", ["c2-C", "c2b", "c3"], Price(D("-0.50"), D("-0.60"))),
    ]
    april = invoices[2]
    credit_line = april.lines[0]
    assert credit_line.credit is True
    assert credit_line.credit_reference_id == "c2"
    assert credit_line.cost == Price(D("-7.00"), D("-8.47"))
    assert credit_line.energy_kwh == 20  # quantities stay as in the credited CDR


def test_invoice_by_contract_spans_tokens_and_month_can_follow_session_end() -> None:
    invoices = build_invoices(sample(), key=InvoiceKey.CONTRACT, month_of="session_end")
    assert [(i.invoice_id, [ln.cdr_id for ln in i.lines]) for i in invoices] == [
        ("C-1-202603-EUR", ["c1", "c4", "c2", "c2-C", "c2b"]),
        ("C-1-202604-EUR", ["c3"]),
    ]
    assert invoices[0].total.excl_vat == D("4.00") + D("1.30") + D("7.00") - D("7.00") + D("4.00")


def test_month_is_taken_in_the_cpo_time_zone() -> None:
    late = cdr("late", "T", datetime(2026, 3, 31, 20, 0, tzinfo=UTC), "1")  # issued 22:01Z
    assert build_invoices([late])[0].month == 3
    assert build_invoices([late], time_zone="Europe/Amsterdam")[0].month == 4  # 00:01 CEST


def test_json_and_csv() -> None:
    invoices = build_invoices(sample(), time_zone="Europe/Amsterdam")
    data = json.loads(ocpi_json(invoices[2].to_dict()), parse_float=Decimal)
    assert data["invoice_id"] == "TOKEN-A-202604-EUR"
    assert data["month"] == "2026-04"
    assert data["total"] == {"excl_vat": D("-0.50"), "incl_vat": D("-0.60")}
    assert data["lines"][0]["cost"] == {"excl_vat": D("-7.00"), "incl_vat": D("-8.47")}
    rows = list(csv.DictReader(io.StringIO(invoices[2].to_csv())))
    assert [r["cdr_id"] for r in rows] == ["c2-C", "c2b", "c3"]
    assert rows[0]["credit"] == "true"
    assert rows[0]["credit_reference_id"] == "c2"
    assert rows[0]["cost_excl_vat"] == "-7.00"
    assert sum(D(r["cost_excl_vat"]) for r in rows) == invoices[2].total.excl_vat
    assert rows[2]["start_date_time"] == "2026-04-02T08:00:00Z"


def test_unknown_vat_leaves_incl_empty() -> None:
    no_vat = tariff([{"price_components": [component("ENERGY", 0.30)]}])
    start = datetime(2026, 3, 10, tzinfo=UTC)
    priced = price_session(no_vat, usage(start, [(60, "10")]), time_zone="UTC")
    ctx = CdrContext(
        "x", "NL", "AMP", "s", CdrToken("T", "C"), AuthMethod.COMMAND, "l", "e", "E", "1"
    )
    invoices = build_invoices([build_cdr(priced, ctx, last_updated=start), *sample()[:1]])
    t_invoice = next(i for i in invoices if i.holder == "T")
    assert t_invoice.total == Price(D("3.00"), None)
    assert next(csv.DictReader(io.StringIO(t_invoice.to_csv())))["cost_incl_vat"] == ""


def test_stored_cdrs_with_float_numbers() -> None:
    stored = [json.loads(ocpi_json(c)) for c in sample()]
    assert build_invoices(stored) == build_invoices(sample())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.pop("total_cost"),
            r"cdrs\[0\] \(id 'c1'\)\.total_cost\.excl_vat: expected a value",
        ),
        (
            lambda c: c.update(total_energy="10"),
            r"cdrs\[0\] \(id 'c1'\)\.total_energy: expected a number",
        ),
        (
            lambda c: c.update(last_updated="soon"),
            r"cdrs\[0\] \(id 'c1'\)\.last_updated: expected an RFC 3339",
        ),
        (
            lambda c: c["cdr_token"].pop("uid"),
            r"cdrs\[0\] \(id 'c1'\)\.cdr_token\.uid: expected a value",
        ),
    ],
)
def test_bad_cdr_is_named(change: Any, message: str) -> None:
    cdrs = sample()
    change(cdrs[0])
    with pytest.raises(InvoiceError, match=message):
        build_invoices(cdrs)


def test_repeated_cdr_and_bad_options() -> None:
    cdrs = sample()
    with pytest.raises(InvoiceError, match=r"cdrs\[6\] \(id 'c1'\)\.id: expected each CDR once"):
        build_invoices([*cdrs, cdrs[0]])
    with pytest.raises(InvoiceError, match="key: expected one of token, contract, got 'driver'"):
        build_invoices(cdrs, key="driver")  # type: ignore[arg-type]
    with pytest.raises(InvoiceError, match="month_of: expected 'issued' or 'session_end'"):
        build_invoices(cdrs, month_of="start")  # type: ignore[arg-type]
    with pytest.raises(InvoiceError, match=r"cdrs\[0\]: expected a CDR JSON object"):
        build_invoices(["c1"])  # type: ignore[list-item]
