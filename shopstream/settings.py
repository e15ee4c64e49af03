"""One frozen settings object per process, read from ``SHOPSTREAM_*`` variables.

Every Kafka client in the project is built from a :class:`Settings` (see
:mod:`shopstream.kafka`); nothing else reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shopstream.errors import UserError

ProcessingGuarantee = Literal["exactly-once", "at-least-once"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

DEFAULT_BROKER_ADDRESS = "127.0.0.1:19092"


class Settings(BaseSettings):
    """Process-wide configuration; immutable once read.

    Defaults run everything locally against the embedded broker on port 19092,
    the same external port the Redpanda compose file publishes.
    """

    model_config = SettingsConfigDict(env_prefix="SHOPSTREAM_", frozen=True, extra="ignore")

    broker_address: str = Field(
        DEFAULT_BROKER_ADDRESS, description="Kafka bootstrap servers, host:port[,host:port]"
    )
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism; unset means no authentication"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    tls_ca_file: Path | None = Field(
        None, description="CA bundle; set it to connect over TLS"
    )
    data_dir: Path = Field(
        Path("./data"), description="Quix state stores, DuckDB files, caches"
    )
    processing_guarantee: ProcessingGuarantee = Field(
        "exactly-once", description="Quix apps: exactly-once (transactions) or at-least-once"
    )
    session_timeout_ms: int = Field(
        6000, ge=1000, description="Consumer group session timeout (ms)"
    )
    heartbeat_interval_ms: int = Field(
        500, ge=100, description="Consumer group heartbeat interval (ms)"
    )
    lake_catalog: str | None = Field(
        None,
        description="DuckLake catalog of the read models: sqlite:PATH or postgres:DSN "
        "(default sqlite:<data_dir>/lake/catalog.sqlite)",
    )
    lake_data_path: str | None = Field(
        None, description="Where the read models' Parquet files go (default <data_dir>/lake/files/)"
    )
    dashboard_port: int = Field(
        8501, ge=1, le=65535, description="Port of the dashboard (on 127.0.0.1 by default)"
    )
    partitions: int = Field(
        3, ge=1, le=1000,
        description="Partitions of every catalog topic (apps scale up to this many replicas)",
    )  # fmt: skip
    replication_factor: int = Field(
        1, ge=1, le=16,
        description="Replicas of every topic created by shopstream (3 on a 3-broker cluster)",
    )  # fmt: skip
    instance_id: str = Field(
        "0",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Stable id of this app instance; part of its transactional.id",
    )

    @field_validator("lake_catalog")
    @classmethod
    def _check_catalog(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:", "postgres:")):
            raise ValueError("expected sqlite:PATH or postgres:DSN")
        return value

    @field_validator("broker_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return value

    @property
    def security_protocol(self) -> str:
        """librdkafka ``security.protocol`` implied by the SASL and TLS settings."""
        tls = self.tls_ca_file is not None
        if self.sasl_mechanism:
            return "SASL_SSL" if tls else "SASL_PLAINTEXT"
        return "SSL" if tls else "PLAINTEXT"

    def with_broker(self, address: str) -> Settings:
        """A copy pointing at another broker (validated like the environment)."""
        return load_settings(broker_address=address, base=self)


def load_settings(base: Settings | None = None, **overrides: object) -> Settings:
    """Read settings from the environment (or ``base``) plus ``overrides``.

    Raises :class:`UserError` naming the variable and the problem, never a
    pydantic traceback.
    """
    try:
        if base is None:
            return Settings(**overrides)  # type: ignore[arg-type]
        values = base.model_dump() | overrides
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        env = f"SHOPSTREAM_{field.upper()}"
        raise UserError(
            f"bad setting {env}={first.get('input')!r}: {first['msg']} "
            f"- fix the variable or the flag"
        ) from None


@cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return load_settings()


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that makes a child process read exactly ``settings``.

    Starts from ``base`` (default: this process's environment) without any variable of a
    setting, then adds one per setting that has a value; other variables pass through.
    """
    fields = {f"SHOPSTREAM_{name.upper()}" for name in Settings.model_fields}
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in fields}
    for name, value in settings.model_dump(exclude_none=True).items():
        secret = getattr(value, "get_secret_value", None)
        env[f"SHOPSTREAM_{name.upper()}"] = str(secret() if secret else value)
    return env
