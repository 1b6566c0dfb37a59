"""One configuration object for the server: environment variables and an optional TOML file.

Every field can be set as an environment variable with the prefix ``AMPFLOW_`` (for example
``AMPFLOW_DATABASE_URL``, ``AMPFLOW_TICK_S``), in a TOML file named by ``AMPFLOW_CONFIG`` (or
passed to :func:`load_settings`), or as a keyword argument. Keyword arguments win over the
environment, which wins over the file, which wins over the defaults.

Data directory
--------------
State lives under ``data_dir``: by default ``$XDG_DATA_HOME/ampflow``, that is
``~/.local/share/ampflow`` on most systems. Without ``database_url`` the database is the SQLite
file ``ampflow.db`` there, created on first start with no set-up. With
``AMPFLOW_DATABASE_URL=postgresql+psycopg://user@host/db`` PostgreSQL is used instead.

Secrets
-------
``secret_key`` peppers the hashes of API keys. Its default is only accepted when
``environment`` is ``development``; any other environment refuses to start with it.

Examples
--------
>>> s = Settings(data_dir="/tmp/ampflow-doc", database_url=None)
>>> s.effective_database_url()
'sqlite:////tmp/ampflow-doc/ampflow.db'
>>> import pydantic
>>> try:
...     Settings(environment="production", secret_key=DEV_SECRET_KEY)
... except pydantic.ValidationError as exc:
...     print(exc.errors()[0]["msg"][:72])
Value error, secret_key: the built-in development default is refused in
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ampflow.gateway.openadr.config import OpenAdrSettings

__all__ = [
    "DEV_SECRET_KEY",
    "Environment",
    "OcppSettings",
    "Settings",
    "UnknownStations",
    "default_data_dir",
    "load_settings",
]

DEV_SECRET_KEY = "ampflow-development-secret-do-not-use-in-production"


class Environment(StrEnum):
    """Where the server runs; only ``development`` accepts built-in default secrets."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/ampflow``, falling back to ``~/.local/share/ampflow``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ampflow"


PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class UnknownStations(StrEnum):
    """What the OCPP endpoint does with a station id that is not registered."""

    REJECT = "reject"  # refuse the WebSocket handshake (HTTP 404)
    PENDING = "pending"  # accept the socket, answer BootNotification with Pending


class OcppSettings(BaseModel):
    """The OCPP central system (``[ocpp]`` in TOML, ``AMPFLOW_OCPP__<FIELD>`` in the environment).

    Attributes
    ----------
    unknown_stations : UnknownStations
        Reject unregistered station ids at the handshake, or hold them pending.
    heartbeat_s : int
        Heartbeat interval given to stations in the BootNotification response [s].
    response_timeout_s : float
        How long one outbound call waits for the station's answer [s].
    retries : int
        Further attempts of an outbound call after a timeout.
    rate_per_s, rate_burst : float, int
        Per-connection message rate limit: sustained rate [1/s] and burst (token bucket).
    tx_default_a : float
        TxDefaultProfile limit sent at boot [A per phase]; a new session draws at most this
        until the engine has planned. Non-zero values are reserved on idle connectors.
    authorize_unknown_tokens : bool
        Accept idTags that are not in the store (free vend); off by default.
    batch_wait_s : float
        How long the limit sink waits for the answers to one batch of profiles [s].
    verify_grace_s : float
        Time an EV gets to follow a lowered limit before its meter values count against it [s].
    composite_delay_s : float
        How long after a TxProfile is accepted the sink asks for the composite schedule [s]; a
        round of limits to 1,000s of stations goes out first, and a profile replaced meanwhile
        is not checked (its successor is).
    over_limit_tolerance_kw : float
        Measured power may exceed the limit by this much (or 5 %) before it counts [kW].
    flag_hold_s : float
        How long a flagged station is treated as uncontrollable before it is probed again [s].
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unknown_stations: UnknownStations = UnknownStations.REJECT
    heartbeat_s: Annotated[int, Field(ge=10, le=86_400)] = 300
    response_timeout_s: PositiveSeconds = 30.0
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    rate_per_s: PositiveSeconds = 20.0
    rate_burst: Annotated[int, Field(ge=1, le=10_000)] = 60
    tx_default_a: Annotated[float, Field(ge=0, le=1000)] = 0.0
    authorize_unknown_tokens: bool = False
    batch_wait_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    verify_grace_s: Annotated[float, Field(ge=0, le=3600)] = 15.0
    composite_delay_s: Annotated[float, Field(ge=0, le=3600)] = 2.0
    over_limit_tolerance_kw: Annotated[float, Field(ge=0)] = 0.5
    flag_hold_s: PositiveSeconds = 300.0


class Settings(BaseSettings):
    """Server configuration (environment prefix ``AMPFLOW_``).

    Attributes
    ----------
    environment : Environment
    data_dir : Path
        Directory for the SQLite database and other state.
    database_url : str or None
        SQLAlchemy URL; ``None`` means the SQLite file ``data_dir/ampflow.db``.
    secret_key : SecretStr
        Pepper for API key hashes (HMAC-SHA256); at least 32 characters outside development.
    host, port : str, int
        Where ``ampflow serve`` listens; 127.0.0.1:8000 by default.
    tick_s : float
        Control-loop period [s]: the allocator runs every tick and on every wake-up.
    replan_s : float
        Horizon scheduler period [s]; it also re-plans at once when a target, a cap or the
        capacity changes.
    replan_debounce_s : float
        Least time between the starts of two re-plans [s], so that a burst of changes costs one
        re-plan rather than many (the allocator applies every change at the next tick anyway).
    min_tick_interval_s : float
        Least time between two ticks [s]: changes arriving together are taken in one tick.
    plan_horizon_h, plan_step_s : float, int
        Length of the plan [h] and its step [s].
    limit_tolerance_kw : float
        A connector's limit is re-sent only when it moves by more than this [kW].
    demand_headroom_kw : float
        An EV drawing less than its limit is offered what it draws plus this [kW].
    default_import_price, default_export_price : float
        Price when no price series covers a step [currency/kWh].
    simple_level_fractions : list of 4 floats
        Share of the site's import limit allowed under SIMPLE levels 0, 1, 2, 3.
    boost_weight : float
        Weight multiplier of a boosted session.
    default_dwell_h : float
        Assumed stay of an EV without a departure time [h].
    solver_time_limit_s : float
        HiGHS time limit of one re-plan [s].
    urgency_bias_per_kwh : float
        Tie-break cost per kWh of charging an EV later, rising from 0 now to this at its
        departure [currency/kWh] (``ScheduleProblem.urgency_bias_per_kwh``): where a site limit
        binds and several plans cost the same, the plan serves first the EVs that leave first,
        so a driver who leaves early has had the most. Keep it below the price steps that
        matter (a price difference smaller than it may be traded for urgency); 0 leaves the
        order to the solver.
    replan_nice : int
        How much lower the re-plan thread's CPU priority is than the rest (Linux ``nice``
        increment, 0 to 19; 0 keeps it equal): the real-time path comes first.
    idempotency_ttl_h : float
        How long ``Idempotency-Key`` records are kept [h].
    tls_cert_file, tls_key_file : Path or None
        PEM certificate chain and key: ``ampflow serve`` then speaks HTTPS and ``wss://``
        (OCPP security profile 2).
    ocpp : OcppSettings
        The OCPP central system.
    openadr : OpenAdrSettings
        The OpenADR VENs ``ampflow serve`` runs (``[[openadr.vens]]`` tables, see
        :mod:`ampflow.gateway.openadr.config`).
    """

    model_config = SettingsConfigDict(
        env_prefix="AMPFLOW_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )
    _toml_file: ClassVar[Path | None] = None

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"
    tick_s: PositiveSeconds = 5.0
    replan_s: PositiveSeconds = 300.0
    replan_debounce_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    min_tick_interval_s: Annotated[float, Field(ge=0, le=60)] = 0.1
    plan_horizon_h: Annotated[float, Field(gt=0, le=168)] = 24.0
    plan_step_s: Annotated[int, Field(ge=60, le=3600)] = 900
    limit_tolerance_kw: Annotated[float, Field(ge=0)] = 0.1
    demand_headroom_kw: Annotated[float, Field(ge=0)] = 1.0
    default_import_price: Annotated[float, Field(allow_inf_nan=False)] = 0.25
    default_export_price: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    simple_level_fractions: tuple[float, float, float, float] = (1.0, 0.75, 0.5, 0.0)
    boost_weight: Annotated[float, Field(gt=0)] = 4.0
    default_dwell_h: PositiveSeconds = 8.0
    solver_time_limit_s: PositiveSeconds = 20.0
    urgency_bias_per_kwh: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.01
    replan_nice: Annotated[int, Field(ge=0, le=19)] = 10
    idempotency_ttl_h: PositiveSeconds = 24.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    ocpp: OcppSettings = OcppSettings()
    openadr: OpenAdrSettings = OpenAdrSettings()

    @field_validator("secret_key")
    @classmethod
    def _refuse_default_secret(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        env = info.data.get("environment", Environment.DEVELOPMENT)
        if env is Environment.DEVELOPMENT:
            return value
        secret = value.get_secret_value()
        if secret == DEV_SECRET_KEY:
            raise ValueError(
                f"secret_key: the built-in development default is refused in environment "
                f"{env.value!r}; set AMPFLOW_SECRET_KEY to a random string of at least 32 "
                f"characters"
            )
        if len(secret) < 32:
            raise ValueError(f"secret_key: expected at least 32 characters, got {len(secret)}")
        return value

    @field_validator("plan_step_s")
    @classmethod
    def _whole_minutes(cls, value: int) -> int:
        # Time-of-day limits are minute-aligned and evaluated minute by minute.
        if value % 60:
            raise ValueError(f"plan_step_s must be a whole number of minutes, got {value}")
        return value

    @field_validator("simple_level_fractions")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= f <= 1 for f in value):
            raise ValueError(f"simple_level_fractions: each must be in [0, 1], got {value}")
        return value

    def effective_database_url(self) -> str:
        """The database URL in use: ``database_url``, or the SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'ampflow.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = cls._toml_file or _env_config_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def _env_config_file() -> Path | None:
    path = os.environ.get("AMPFLOW_CONFIG")
    return Path(path) if path else None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings from keyword overrides, the environment and a TOML file.

    Parameters
    ----------
    config_file : path, optional
        TOML file with top-level keys named like the fields (``tick_s = 2``); defaults to the
        file named by ``AMPFLOW_CONFIG``, if any.
    **overrides
        Field values that take precedence over everything else.

    Raises
    ------
    FileNotFoundError
        If ``config_file`` does not exist.
    pydantic.ValidationError
        For a bad value, naming the field.
    """
    path = Path(config_file) if config_file is not None else _env_config_file()
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config_file: no such TOML file {str(path)!r}")

    class _FromFile(Settings):
        _toml_file: ClassVar[Path | None] = path

    loaded = _FromFile(**overrides)
    return Settings.model_construct(**dict(loaded))
