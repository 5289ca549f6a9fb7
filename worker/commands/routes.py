"""``seq2gmm routes ...``: which model scores which series (the routing table in Redis).

``list`` shows the rules in order with the default, ``add PATTERN MODEL`` adds or replaces a
rule (``--position 0`` puts it first), ``remove PATTERN`` drops one, ``default MODEL`` (or
``--none``) sets the fallback, ``test SERIES_ID`` says which rule and model a series gets and
whether that model has an active version. ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from worker.commands.models import open_registry
from worker.ops.settings import Settings
from worker.registry.routes import RouteStore
from worker.stream.routing import RouteTable


@contextmanager
def open_routes(settings: Settings) -> Iterator[RouteStore]:
    with open_registry(settings) as registry:
        yield RouteStore(registry)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("routes", help="the routing table: which model scores which series")
    rsub = p.add_subparsers(dest="routes_command", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = rsub.add_parser(name, help=help, description=help)
        a.add_argument("--json", action="store_true", help="print one JSON document")
        return a

    action("list", "the rules in the order they are tried, and the default").set_defaults(
        handler=_list
    )
    add = action("add", "add a rule (a prefix, or a glob with * ? [), or replace its model")
    add.add_argument("pattern", metavar="PATTERN", help="series-id prefix, or a glob")
    add.add_argument("model", metavar="MODEL", help="the registry model that scores them")
    add.add_argument("--position", type=int, help="where to insert it (0 = tried first)")
    add.set_defaults(handler=_add)
    rm = action("remove", "remove the rule with this pattern")
    rm.add_argument("pattern", metavar="PATTERN")
    rm.set_defaults(handler=_remove)
    de = action("default", "the model for series no rule matches (--none: dead-letter them)")
    group = de.add_mutually_exclusive_group(required=True)
    group.add_argument("model", metavar="MODEL", nargs="?")
    group.add_argument("--none", action="store_true", help="no default model")
    de.set_defaults(handler=_default)
    te = action("test", "which rule and model a series id gets")
    te.add_argument("series_id", metavar="SERIES_ID")
    te.set_defaults(handler=_test)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with open_routes(settings) as store:
        _show(store.get(), args.json)
    return 0


def _add(args: argparse.Namespace, settings: Settings) -> int:
    with open_routes(settings) as store:
        _show(store.add(args.pattern, args.model, args.position), args.json)
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    with open_routes(settings) as store:
        _show(store.remove(args.pattern), args.json)
    return 0


def _default(args: argparse.Namespace, settings: Settings) -> int:
    with open_routes(settings) as store:
        _show(store.set_default(None if args.none else args.model), args.json)
    return 0


def _test(args: argparse.Namespace, settings: Settings) -> int:
    with open_routes(settings) as store:
        table = store.get()
        rule = table.match(args.series_id)
        model = table.model_for(args.series_id)
        active = store.reader.resolve(model) if model else None
    out = {
        "series_id": args.series_id,
        "model": model,
        "rule": None if rule is None else {"pattern": rule.pattern, "model": rule.model},
        "by_default": rule is None and model is not None,
        "active_version": active,
        "revision": table.revision,
    }
    if args.json:
        print(json.dumps(out))
    elif model is None:
        print(table.no_route_reason(args.series_id))
    else:
        how = rule.describe() if rule is not None else "the default model"
        state = f"active version {active}" if active else "NO active version yet (cold start)"
        print(f"{args.series_id} -> {model} (by {how}); {model} has {state}")
    return 0 if model is not None else 1


def _show(table: RouteTable, as_json: bool) -> None:
    if as_json:
        print(table.to_json())
        return
    print(f"routing table, revision {table.revision} (first match wins)")
    if not table.rules:
        print("  (no rules)")
    for i, r in enumerate(table.rules):
        print(f"  {i:>3}  {r.describe()}")
    print(f"  default: {table.default or '(none: unmatched series are dead-lettered)'}")
