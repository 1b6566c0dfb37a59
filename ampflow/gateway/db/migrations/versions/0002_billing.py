"""Billing: tariffs per site, billing settings, CDRs and their audit trail, V2G statements.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Migrations are frozen in time: they use plain SQLAlchemy types, never the application's own.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """Timestamps are UTC; the application converts at its edges."""
    return sa.DateTime(timezone=True)


def _site_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["site_pk"], ["sites.pk"], name=op.f(f"fk_{table}_site_pk_sites"), ondelete="CASCADE"
    )


def _session_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["session_pk"],
        ["sessions.pk"],
        name=op.f(f"fk_{table}_session_pk_sessions"),
        ondelete="CASCADE",
    )


def _money() -> sa.String:
    return sa.String(length=40)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "tariffs",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("tariff_id", sa.String(length=36), nullable=False),
        sa.Column("country_code", sa.String(length=2), nullable=False),
        sa.Column("party_id", sa.String(length=3), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("start_date_time", _utc(), nullable=True),
        sa.Column("end_date_time", _utc(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("created_by", sa.String(length=24), nullable=True),
        sa.Column("valid_from", _utc(), nullable=True),
        sa.Column("retired_at", _utc(), nullable=True),
        _site_fk("tariffs"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_tariffs")),
    )
    op.create_index(
        "ix_tariffs_site_pk_tariff_id", "tariffs", ["site_pk", "tariff_id"], unique=False
    )
    op.create_index(
        "uq_tariffs_current",
        "tariffs",
        ["site_pk", "tariff_id"],
        unique=True,
        sqlite_where=sa.text("retired_at IS NULL"),
        postgresql_where=sa.text("retired_at IS NULL"),
    )

    op.create_table(
        "site_billing",
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("idle_grace_s", sa.Integer(), nullable=False),
        sa.Column("idle_power_kw", _money(), nullable=False),
        sa.Column("money_places", sa.SmallInteger(), nullable=False),
        sa.Column("v2g_interval_s", sa.Integer(), nullable=False),
        sa.Column("default_export_price", _money(), nullable=False),
        sa.Column("degradation_per_kwh", _money(), nullable=False),
        sa.Column("driver_share", _money(), nullable=False),
        sa.Column("missed_target_per_kwh", _money(), nullable=False),
        sa.Column("dr_payment_per_kwh", _money(), nullable=False),
        sa.Column("capacity_payment_per_kw", _money(), nullable=False),
        sa.Column("dr_excludes_export", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        _site_fk("site_billing"),
        sa.PrimaryKeyConstraint("site_pk", name=op.f("pk_site_billing")),
    )

    op.create_table(
        "cdrs",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=39), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("credit", sa.Boolean(), nullable=False),
        sa.Column("credit_reference_id", sa.String(length=39), nullable=True),
        sa.Column("token_uid", sa.String(length=36), nullable=False),
        sa.Column("contract_id", sa.String(length=36), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("start_at", _utc(), nullable=False),
        sa.Column("end_at", _utc(), nullable=False),
        sa.Column("issued_at", _utc(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _site_fk("cdrs"),
        _session_fk("cdrs"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_cdrs")),
        sa.UniqueConstraint("id", name=op.f("uq_cdrs_id")),
        sa.UniqueConstraint("credit_reference_id", name=op.f("uq_cdrs_credit_reference_id")),
    )
    op.create_index("ix_cdrs_site_pk_issued_at", "cdrs", ["site_pk", "issued_at"], unique=False)
    for column in ("session_pk", "token_uid", "contract_id"):
        op.create_index(op.f(f"ix_cdrs_{column}"), "cdrs", [column], unique=False)

    op.create_table(
        "cdr_audit",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("cdr_id", sa.String(length=39), nullable=False),
        sa.Column("reference_id", sa.String(length=39), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        _site_fk("cdr_audit"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_cdr_audit")),
    )
    for column in ("site_pk", "cdr_id", "reference_id"):
        op.create_index(op.f(f"ix_cdr_audit_{column}"), "cdr_audit", [column], unique=False)

    op.create_table(
        "v2g_statements",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("driver_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("start_at", _utc(), nullable=False),
        sa.Column("end_at", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _site_fk("v2g_statements"),
        _session_fk("v2g_statements"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_v2g_statements")),
        sa.UniqueConstraint("session_pk", name=op.f("uq_v2g_statements_session_pk")),
    )
    op.create_index(
        "ix_v2g_statements_site_pk_end_at", "v2g_statements", ["site_pk", "end_at"], unique=False
    )
    op.create_index(
        "ix_v2g_statements_driver_id_end_at",
        "v2g_statements",
        ["driver_id", "end_at"],
        unique=False,
    )


def downgrade() -> None:
    """Downgrade schema."""
    for table in ("v2g_statements", "cdr_audit", "cdrs", "site_billing", "tariffs"):
        op.drop_table(table)
