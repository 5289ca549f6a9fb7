"""Errors raised by the worker side; all derive from the project's root exception."""

from model.errors import DataError, Seq2GMMError


class ConfigError(Seq2GMMError):
    """Settings are invalid or incomplete; the message names the environment variable."""


class ServiceError(Seq2GMMError):
    """An external service (Kafka, Redis, the embedded dev services) is unusable."""


class MessageError(Seq2GMMError, ValueError):
    """A stream message failed to decode or validate; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WrongWidthError(DataError):
    """A series sends samples with another number of features than the served model expects;
    the record goes to the dead-letter topic (``wrong_width``): produce that many values."""


__all__ = ["ConfigError", "MessageError", "Seq2GMMError", "ServiceError", "WrongWidthError"]
