"""One exception type per domain. Each carries a user-facing message; the CLI prints it and exits 2."""

from enum import IntEnum


class ExitStatus(IntEnum):
    """Every exit code fnsft uses. Interrupted runs follow the shell convention 128 + signal number."""

    OK = 0
    UNEXPECTED = 1  # a bug or an environment problem fnsft did not anticipate (see --traceback)
    BAD_INPUT = 2  # an FnsftError: the message says what to fix
    SIGINT = 130
    SIGTERM = 143


class FnsftError(Exception):
    """Base class: a problem the user can fix. The message is shown as is, without a traceback."""

    exit_code: int = ExitStatus.BAD_INPUT


class RecipeError(FnsftError):
    """Invalid recipe file, key, value or override."""


class DataError(FnsftError):
    """Missing or malformed dataset file, rows or format."""


class ModelError(FnsftError):
    """Missing or unsupported model."""


class EstimateError(FnsftError):
    """Estimator input that cannot be estimated (unknown model, nonsense sizes, unknown GPU)."""


class TrainError(FnsftError):
    """A run that cannot start or continue (busy output dir, nothing to resume, ...)."""


class MaskError(FnsftError):
    """Invalid or mismatched mask file."""


class ExportError(FnsftError):
    """Export or push that cannot be done."""


class NotYetSupported(FnsftError):
    """A feature that is planned but not finished; the message says what is missing."""
