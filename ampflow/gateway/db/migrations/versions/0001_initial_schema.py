"""Initial schema.

Sites and their capacity tree, stations, sessions, transactions, meter values, signals,
time-of-day limits, charging profiles, control state, API keys and idempotency records.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Migrations are frozen in time: they use plain SQLAlchemy types, never the application's own.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """Timestamps are UTC; the application converts at its edges."""
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "api_keys",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("revoked_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("id", name=op.f("uq_api_keys_id")),
    )
    op.create_table(
        "sites",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("import_kw", sa.Float(), nullable=False),
        sa.Column("export_kw", sa.Float(), nullable=False),
        sa.Column("voltage_v", sa.Float(), nullable=False),
        sa.Column("power_factor", sa.Float(), nullable=False),
        sa.Column("phase_a_l1", sa.Float(), nullable=True),
        sa.Column("phase_a_l2", sa.Float(), nullable=True),
        sa.Column("phase_a_l3", sa.Float(), nullable=True),
        sa.Column("min_import_kw", sa.Float(), nullable=False),
        sa.Column("demand_charge_per_kw", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_sites")),
        sa.UniqueConstraint("id", name=op.f("uq_sites_id")),
    )
    op.create_table(
        "api_key_sites",
        sa.Column("key_pk", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_pk"],
            ["api_keys.pk"],
            name=op.f("fk_api_key_sites_key_pk_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_pk", "site_id", name=op.f("pk_api_key_sites")),
    )
    op.create_table(
        "id_tokens",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", _utc(), nullable=True),
        sa.Column("group_token", sa.String(length=36), nullable=True),
        sa.Column("driver_id", sa.String(length=64), nullable=True),
        sa.Column("site_pk", sa.Integer(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_pk"], ["sites.pk"], name=op.f("fk_id_tokens_site_pk_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_id_tokens")),
        sa.UniqueConstraint("token", name=op.f("uq_id_tokens_token")),
    )
    op.create_table(
        "idempotency_records",
        sa.Column("key_pk", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_pk"],
            ["api_keys.pk"],
            name=op.f("fk_idempotency_records_key_pk_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_pk", "key", name=op.f("pk_idempotency_records")),
    )
    op.create_index(
        op.f("ix_idempotency_records_created_at"),
        "idempotency_records",
        ["created_at"],
        unique=False,
    )

    op.create_table(
        "nodes",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("parent_pk", sa.Integer(), nullable=True),
        sa.Column("import_kw", sa.Float(), nullable=True),
        sa.Column("export_kw", sa.Float(), nullable=True),
        sa.Column("phase_a_l1", sa.Float(), nullable=True),
        sa.Column("phase_a_l2", sa.Float(), nullable=True),
        sa.Column("phase_a_l3", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_pk"], ["nodes.pk"], name=op.f("fk_nodes_parent_pk_nodes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["site_pk"], ["sites.pk"], name=op.f("fk_nodes_site_pk_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_nodes")),
        sa.UniqueConstraint("site_pk", "id", name=op.f("uq_nodes_site_pk_id")),
    )
    op.create_index(op.f("ix_nodes_parent_pk"), "nodes", ["parent_pk"], unique=False)

    op.create_table(
        "signals",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("modification_number", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("opt_state", sa.String(length=8), nullable=False),
        sa.Column("program", sa.String(length=128), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("start_at", _utc(), nullable=False),
        sa.Column("end_at", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("cancelled_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_pk"], ["sites.pk"], name=op.f("fk_signals_site_pk_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_signals")),
        sa.UniqueConstraint("id", name=op.f("uq_signals_id")),
        sa.UniqueConstraint(
            "source", "site_pk", "external_id", name=op.f("uq_signals_source_site_pk_external_id")
        ),
    )
    op.create_index(
        "ix_signals_site_pk_kind_end_at", "signals", ["site_pk", "kind", "end_at"], unique=False
    )

    op.create_table(
        "site_control",
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("tick", sa.BigInteger(), nullable=False),
        sa.Column("decided_at", _utc(), nullable=True),
        sa.Column("import_limit_kw", sa.Float(), nullable=True),
        sa.Column("dr_cap_kw", sa.Float(), nullable=True),
        sa.Column("tod_cap_kw", sa.Float(), nullable=True),
        sa.Column("allocated_kw", sa.Float(), nullable=True),
        sa.Column("active_signals", _json(), nullable=False),
        sa.Column("plan_computed_at", _utc(), nullable=True),
        sa.Column("plan_start_at", _utc(), nullable=True),
        sa.Column("plan_step_s", sa.Integer(), nullable=True),
        sa.Column("plan_status", sa.String(length=16), nullable=True),
        sa.Column("plan_message", sa.String(length=500), nullable=True),
        sa.Column("plan_site_kw", _json(), nullable=False),
        sa.Column("plan_limit_kw", _json(), nullable=False),
        sa.Column("plan_import_price", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_pk"],
            ["sites.pk"],
            name=op.f("fk_site_control_site_pk_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("site_pk", name=op.f("pk_site_control")),
    )
    op.create_table(
        "chargers",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=True),
        sa.Column("max_kw", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=2), nullable=False),
        sa.Column("phases", sa.SmallInteger(), nullable=False),
        sa.Column("phase", sa.String(length=5), nullable=True),
        sa.Column("rotation", sa.String(length=3), nullable=False),
        sa.Column("min_a", sa.Float(), nullable=False),
        sa.Column("min_kw", sa.Float(), nullable=False),
        sa.Column("voltage_v", sa.Float(), nullable=True),
        sa.Column("bidirectional", sa.Boolean(), nullable=False),
        sa.Column("discharge_max_kw", sa.Float(), nullable=True),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_pk"], ["nodes.pk"], name=op.f("fk_chargers_node_pk_nodes"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["site_pk"], ["sites.pk"], name=op.f("fk_chargers_site_pk_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_chargers")),
        sa.UniqueConstraint("site_pk", "id", name=op.f("uq_chargers_site_pk_id")),
    )
    op.create_index(op.f("ix_chargers_node_pk"), "chargers", ["node_pk"], unique=False)

    op.create_table(
        "limit_windows",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=True),
        sa.Column("weekdays", sa.SmallInteger(), nullable=False),
        sa.Column("start_min", sa.SmallInteger(), nullable=False),
        sa.Column("end_min", sa.SmallInteger(), nullable=False),
        sa.Column("import_kw", sa.Float(), nullable=True),
        sa.Column("import_a", sa.Float(), nullable=True),
        sa.Column("export_kw", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_pk"],
            ["nodes.pk"],
            name=op.f("fk_limit_windows_node_pk_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_pk"],
            ["sites.pk"],
            name=op.f("fk_limit_windows_site_pk_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_limit_windows")),
    )
    op.create_index(op.f("ix_limit_windows_site_pk"), "limit_windows", ["site_pk"], unique=False)

    op.create_table(
        "signal_intervals",
        sa.Column("signal_pk", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start_at", _utc(), nullable=False),
        sa.Column("end_at", _utc(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["signal_pk"],
            ["signals.pk"],
            name=op.f("fk_signal_intervals_signal_pk_signals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("signal_pk", "idx", name=op.f("pk_signal_intervals")),
    )
    op.create_table(
        "connectors",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("charger_pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("number", sa.SmallInteger(), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("error_code", sa.String(length=50), nullable=True),
        sa.Column("status_at", _utc(), nullable=True),
        sa.Column("power_kw", sa.Float(), nullable=True),
        sa.Column("energy_wh", sa.Float(), nullable=True),
        sa.Column("soc_pct", sa.Float(), nullable=True),
        sa.Column("measured_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(
            ["charger_pk"],
            ["chargers.pk"],
            name=op.f("fk_connectors_charger_pk_chargers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_pk"], ["sites.pk"], name=op.f("fk_connectors_site_pk_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_connectors")),
        sa.UniqueConstraint("charger_pk", "number", name=op.f("uq_connectors_charger_pk_number")),
    )
    op.create_index(op.f("ix_connectors_site_pk"), "connectors", ["site_pk"], unique=False)

    op.create_table(
        "stations",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("charger_pk", sa.Integer(), nullable=True),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("registration_status", sa.String(length=16), nullable=False),
        sa.Column("ocpp_version", sa.String(length=8), nullable=True),
        sa.Column("vendor", sa.String(length=50), nullable=True),
        sa.Column("model", sa.String(length=50), nullable=True),
        sa.Column("serial_number", sa.String(length=50), nullable=True),
        sa.Column("firmware_version", sa.String(length=50), nullable=True),
        sa.Column("boot_at", _utc(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("last_seen_at", _utc(), nullable=True),
        sa.Column("rate_units", sa.String(length=8), nullable=True),
        sa.Column("max_schedule_periods", sa.Integer(), nullable=True),
        sa.Column("max_stack_level", sa.Integer(), nullable=True),
        sa.Column("smart_charging", sa.Boolean(), nullable=True),
        sa.Column("quirks", _json(), nullable=False),
        sa.Column("flags", _json(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["charger_pk"],
            ["chargers.pk"],
            name=op.f("fk_stations_charger_pk_chargers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["site_pk"], ["sites.pk"], name=op.f("fk_stations_site_pk_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_stations")),
        sa.UniqueConstraint("charger_pk", name=op.f("uq_stations_charger_pk")),
        sa.UniqueConstraint("id", name=op.f("uq_stations_id")),
    )
    op.create_index(op.f("ix_stations_site_pk"), "stations", ["site_pk"], unique=False)

    op.create_table(
        "connector_control",
        sa.Column("connector_pk", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("limit_kw", sa.Float(), nullable=True),
        sa.Column("limit_a", sa.Float(), nullable=True),
        sa.Column("tick", sa.BigInteger(), nullable=True),
        sa.Column("decided_at", _utc(), nullable=True),
        sa.Column("sent_status", sa.String(length=16), nullable=True),
        sa.Column("plan_kw", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_pk"],
            ["connectors.pk"],
            name=op.f("fk_connector_control_connector_pk_connectors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_pk"],
            ["sites.pk"],
            name=op.f("fk_connector_control_site_pk_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connector_pk", name=op.f("pk_connector_control")),
    )
    op.create_index(
        op.f("ix_connector_control_site_pk"), "connector_control", ["site_pk"], unique=False
    )

    op.create_table(
        "meter_values",
        sa.Column("connector_pk", sa.Integer(), nullable=False),
        sa.Column("measurand", sa.SmallInteger(), nullable=False),
        sa.Column("phase", sa.SmallInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_pk"],
            ["connectors.pk"],
            name=op.f("fk_meter_values_connector_pk_connectors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "connector_pk", "measurand", "phase", "ts", name=op.f("pk_meter_values")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "sessions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("connector_pk", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.Column("id_token", sa.String(length=36), nullable=True),
        sa.Column("departure_at", _utc(), nullable=True),
        sa.Column("energy_target_kwh", sa.Float(), nullable=True),
        sa.Column("soc_target_pct", sa.Float(), nullable=True),
        sa.Column("battery_kwh", sa.Float(), nullable=True),
        sa.Column("ev_max_kw", sa.Float(), nullable=True),
        sa.Column("v2g", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("boost", sa.Boolean(), nullable=False),
        sa.Column("targets_updated_at", _utc(), nullable=True),
        sa.Column("meter_start_wh", sa.Float(), nullable=True),
        sa.Column("energy_kwh", sa.Float(), nullable=False),
        sa.Column("power_kw", sa.Float(), nullable=True),
        sa.Column("soc_pct", sa.Float(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_pk"],
            ["connectors.pk"],
            name=op.f("fk_sessions_connector_pk_connectors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_pk"], ["sites.pk"], name=op.f("fk_sessions_site_pk_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_sessions")),
        sa.UniqueConstraint("id", name=op.f("uq_sessions_id")),
    )
    op.create_index(op.f("ix_sessions_connector_pk"), "sessions", ["connector_pk"], unique=False)
    op.create_index(
        "ix_sessions_site_pk_status_started_at",
        "sessions",
        ["site_pk", "status", "started_at"],
        unique=False,
    )
    op.create_index(
        "uq_sessions_open_connector",
        "sessions",
        ["connector_pk"],
        unique=True,
        sqlite_where=sa.text("status IN ('requested', 'active', 'stopping')"),
        postgresql_where=sa.text("status IN ('requested', 'active', 'stopping')"),
    )

    op.create_table(
        "transactions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("station_pk", sa.Integer(), nullable=False),
        sa.Column("ocpp_transaction_id", sa.String(length=36), nullable=False),
        sa.Column("id_tag", sa.String(length=36), nullable=True),
        sa.Column("meter_start_wh", sa.Float(), nullable=True),
        sa.Column("meter_stop_wh", sa.Float(), nullable=True),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("stopped_at", _utc(), nullable=True),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.pk"],
            name=op.f("fk_transactions_session_pk_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["station_pk"],
            ["stations.pk"],
            name=op.f("fk_transactions_station_pk_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_transactions")),
        sa.UniqueConstraint("session_pk", name=op.f("uq_transactions_session_pk")),
        sa.UniqueConstraint(
            "station_pk",
            "ocpp_transaction_id",
            name=op.f("uq_transactions_station_pk_ocpp_transaction_id"),
        ),
    )
    op.create_table(
        "charging_profiles",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("station_pk", sa.Integer(), nullable=False),
        sa.Column("connector_pk", sa.Integer(), nullable=True),
        sa.Column("transaction_pk", sa.Integer(), nullable=True),
        sa.Column("ocpp_profile_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("stack_level", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rate_unit", sa.String(length=1), nullable=False),
        sa.Column("schedule", _json(), nullable=False),
        sa.Column("limit_kw", sa.Float(), nullable=True),
        sa.Column("valid_from", _utc(), nullable=True),
        sa.Column("valid_to", _utc(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.Column("responded_at", _utc(), nullable=True),
        sa.Column("outcome", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["connector_pk"],
            ["connectors.pk"],
            name=op.f("fk_charging_profiles_connector_pk_connectors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["station_pk"],
            ["stations.pk"],
            name=op.f("fk_charging_profiles_station_pk_stations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["transaction_pk"],
            ["transactions.pk"],
            name=op.f("fk_charging_profiles_transaction_pk_transactions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_charging_profiles")),
    )
    op.create_index(
        op.f("ix_charging_profiles_connector_pk"),
        "charging_profiles",
        ["connector_pk"],
        unique=False,
    )
    op.create_index(
        "ix_charging_profiles_station_pk_status",
        "charging_profiles",
        ["station_pk", "status"],
        unique=False,
    )


def downgrade() -> None:
    """Drop every table (their indexes go with them), children first."""
    for table in (
        "charging_profiles",
        "transactions",
        "sessions",
        "meter_values",
        "connector_control",
        "stations",
        "connectors",
        "signal_intervals",
        "limit_windows",
        "chargers",
        "site_control",
        "signals",
        "nodes",
        "idempotency_records",
        "id_tokens",
        "api_key_sites",
        "sites",
        "api_keys",
    ):
        op.drop_table(table)
