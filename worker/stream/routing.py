"""Which model scores which series: an ordered routing table (no Redis, no Kafka here).

A network has many kinds of series (core links, access ports, device CPU), each with its own
cycle and so its own model. The table is a list of rules tried in order, the first match
wins, then an optional default model:

* a pattern with a glob character (``*``, ``?``, ``[``) matches the whole series id as a shell
  glob (``fnmatchcase``: case-sensitive, ``*`` also matches ``/``);
* any other pattern matches series ids that start with it (a prefix).

A series that matches no rule goes to the default model; with no default it has no route, and
the worker dead-letters its samples with :meth:`RouteTable.no_route_reason`. The table is stored
in Redis as one JSON document with a revision number (:mod:`worker.registry.routes`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from worker.errors import ConfigError
from worker.registry.errors import InvalidNameError
from worker.registry.records import validate_name  # model names as the registry spells them

_GLOB = frozenset("*?[")
MAX_PATTERN = 256
MAX_RULES = 10_000


class RouteError(ConfigError):
    """A routing table or rule that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Route:
    pattern: str
    model: str

    @property
    def is_glob(self) -> bool:
        return any(c in _GLOB for c in self.pattern)

    def matches(self, series_id: str) -> bool:
        if self.is_glob:
            return fnmatchcase(series_id, self.pattern)
        return series_id.startswith(self.pattern)

    def describe(self) -> str:
        kind = "glob" if self.is_glob else "prefix"
        return f"{kind} {self.pattern!r} -> {self.model}"


@dataclass(frozen=True)
class RouteTable:
    """Ordered rules plus a default model; ``revision`` counts the stored changes."""

    rules: tuple[Route, ...] = ()
    default: str | None = None
    revision: int = 0
    _cache: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    def model_for(self, series_id: str) -> str | None:
        """The model that scores ``series_id``: the first matching rule's, else the default's,
        else None (no route). Remembered per series (a table never changes in place)."""
        try:
            return self._cache[series_id]
        except KeyError:
            pass
        found = self.match(series_id)
        model = found.model if found is not None else self.default
        if len(self._cache) < 1_000_000:
            self._cache[series_id] = model
        return model

    def match(self, series_id: str) -> Route | None:
        """The first rule that matches ``series_id`` (None: the default applies, if any)."""
        return next((r for r in self.rules if r.matches(series_id)), None)

    def models(self) -> set[str]:
        """Every model the table can route to."""
        out = {r.model for r in self.rules}
        return out | {self.default} if self.default else out

    def no_route_reason(self, series_id: str) -> str:
        return (
            f"no route for series {series_id!r}: no rule of the routing table (revision"
            f" {self.revision}) matches it and there is no default model; add one with"
            " `seq2gmm routes add PATTERN MODEL` or `seq2gmm routes default MODEL`"
        )

    # ------------------------------------------------------------------ edits (new tables)
    def with_rule(self, pattern: str, model: str, position: int | None = None) -> RouteTable:
        """A table with the rule added (at ``position``, 0 = first; default last); a rule of
        the same pattern is replaced where it stands."""
        route = _checked(Route(pattern, model))
        rules = list(self.rules)
        same = [i for i, r in enumerate(rules) if r.pattern == pattern]
        if same and position is None:
            rules[same[0]] = route
        else:
            rules = [r for r in rules if r.pattern != pattern]
            rules.insert(len(rules) if position is None else max(0, position), route)
        if len(rules) > MAX_RULES:
            raise RouteError(f"a routing table holds at most {MAX_RULES} rules")
        return replace(self, rules=tuple(rules), _cache={})

    def without_rule(self, pattern: str) -> RouteTable:
        if all(r.pattern != pattern for r in self.rules):
            raise RouteError(
                f"no rule has the pattern {pattern!r}; `seq2gmm routes list` shows the rules"
            )
        return replace(self, rules=tuple(r for r in self.rules if r.pattern != pattern), _cache={})

    def with_default(self, model: str | None) -> RouteTable:
        if model is not None:
            _checked(Route("*", model))
        return replace(self, default=model, _cache={})

    # ------------------------------------------------------------------ storage form
    def to_json(self) -> str:
        body = {
            "rules": [{"pattern": r.pattern, "model": r.model} for r in self.rules],
            "default": self.default,
            "revision": self.revision,
        }
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RouteTable:
        """The stored form back; a malformed document raises RouteError (never half a table)."""
        try:
            body: Any = json.loads(text)
            rules = tuple(
                _checked(Route(str(r["pattern"]), str(r["model"]))) for r in body["rules"]
            )
            default = body.get("default")
            revision = int(body.get("revision", 0))
        except (ValueError, TypeError, KeyError, InvalidNameError) as exc:
            raise RouteError(
                f"the stored routing table is malformed ({type(exc).__name__}: {exc}); rewrite"
                " it with `seq2gmm routes` (remove and add the rules again)"
            ) from exc
        if default is not None and not isinstance(default, str):
            raise RouteError("the stored routing table's default model is not a name")
        return cls(rules=rules, default=default, revision=revision)


def _checked(route: Route) -> Route:
    if not route.pattern or len(route.pattern) > MAX_PATTERN:
        raise RouteError(f"a route pattern has 1 to {MAX_PATTERN} characters")
    if any(ord(c) < 32 for c in route.pattern):
        raise RouteError("a route pattern cannot hold control characters")
    validate_name(route.model)
    return route
