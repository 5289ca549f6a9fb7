"""The project's exception hierarchy.

Every error the project raises on purpose derives from :class:`Seq2GMMError`, so callers
(the CLI, the worker loop) can catch one type and show its message, which always says what
the user can do about it.
"""


class Seq2GMMError(Exception):
    """Root of every error this project raises on purpose."""


class DataError(Seq2GMMError, ValueError):
    """Input data has the wrong shape, type or content."""


class NotFittedError(Seq2GMMError):
    """A model (or one of its parts) was used before it was trained or loaded."""


class ThresholdNotSetError(Seq2GMMError):
    """A decision was asked for but the model has no threshold: call infer_threshold first."""


class CheckpointError(Seq2GMMError):
    """A checkpoint is missing, incomplete, corrupt or does not match its checksum."""
