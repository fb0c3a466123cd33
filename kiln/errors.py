"""The one error tree: every error Kiln raises on purpose, and whether it may be retried."""

from __future__ import annotations


class KilnError(Exception):
    """Base for every error Kiln raises on purpose."""

    retryable = False


class UserError(KilnError):
    """Bad input: the job fails with this message and is never retried."""


class SpecError(UserError):
    """A job spec that does not validate; `field` names the offending field when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DataError(UserError):
    """A data set that cannot be used; `column` names the offending column when there is one."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class ModelError(UserError):
    """The model raised, or the loss went NaN; `site` and `step` say where when known."""

    def __init__(self, message: str, site: str | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.site = site
        self.step = step


class NotFound(KilnError):
    """An unknown job or dataset id."""


class NotAllowed(KilnError):
    """The HTTP API refused who is asking: no token, a bad or revoked one, or a role that may
    not do this (`jobs` exits 5)."""


class InfraError(KilnError):
    """The database or the broker is down, or a lease was lost: worth retrying."""

    retryable = True


class Cancelled(KilnError):
    """Control flow: the user cancelled the job; not a failure."""
