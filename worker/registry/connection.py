"""Talking to Redis: binary-safe clients from URLs, URLs safe to print, and service errors.

Nothing here knows where Redis runs: the caller passes a URL (the CLI resolves it from the
settings or the embedded development services).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import redis

from worker.errors import ConfigError, ServiceError

P = ParamSpec("P")
R = TypeVar("R")


def describe_url(url: str) -> str:
    """``scheme://host:port/db`` without user name or password (safe for messages and logs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable Redis URL)"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path or ''}"


def connect(url: str, *, timeout_s: float = 10.0) -> redis.Redis:
    """A binary-safe client for ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

    User name and password come from the URL (``redis://user:secret@host:6379/0``); TLS options
    can be given as query parameters (``rediss://host:6380/0?ssl_ca_certs=/etc/ca.pem``).
    """
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=False,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
    except ValueError as exc:
        # redis-py's messages name the scheme or option, never the password.
        raise ConfigError(
            f"SEQ2GMM_REDIS__URL is not a usable Redis URL ({exc}); expected"
            " redis://[user:password@]host:port/db or rediss://... for TLS"
        ) from None


def service_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn redis-py connection and server errors into ServiceError (no secrets in them).

    For a method, the messages name its object's ``where`` (a URL safe to print).
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.AuthenticationError as exc:
            where = _where(args)
            raise ServiceError(
                f"Redis at {where} refused the credentials ({exc}); check the user name and"
                " password in SEQ2GMM_REDIS__URL"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            where = _where(args)
            raise ServiceError(
                f"cannot reach Redis at {where} ({exc}); check SEQ2GMM_REDIS__URL or start"
                " the embedded one with `seq2gmm dev up`"
            ) from None
        except redis.RedisError as exc:
            raise ServiceError(
                f"Redis refused a registry command ({type(exc).__name__}: {exc}); check that"
                " the user in SEQ2GMM_REDIS__URL may run scripts and that no other program"
                " writes the registry's keys"
            ) from None

    return wrapper


def _where(args: tuple[Any, ...]) -> str:
    """The ``where`` of the decorated method's object, else plain "Redis"."""
    where = getattr(args[0], "where", None) if args else None
    return where if isinstance(where, str) else "Redis"


def as_text(value: Any) -> str:
    """A Redis reply (bytes from a binary-safe client) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["as_text", "connect", "describe_url", "service_errors"]
