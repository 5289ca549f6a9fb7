"""``seq2gmm models ...``: the model registry in Redis (list, show, publish, promote, ...).

Every action prints a readable table or summary; ``--json`` prints exactly one JSON document
on stdout instead (logs go to stderr).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from model.checkpoint import json_safe
from worker.dev.endpoints import resolve_redis_url
from worker.ops.settings import Settings
from worker.registry.errors import ModelNotFoundError
from worker.registry.records import (
    ACTIVE,
    VersionInfo,
    parse_ref,
    validate_name,
    validate_version,
)
from worker.registry.store import ModelRegistry


@contextmanager
def open_registry(settings: Settings) -> Iterator[ModelRegistry]:
    """``with open_registry(settings) as reg:`` -- the registry on the configured Redis (else
    the running embedded one) under the configured key prefix, closed afterwards."""
    registry = ModelRegistry.from_url(resolve_redis_url(settings), settings.redis.key_prefix)
    try:
        yield registry
    finally:
        registry.close()


def register(sub: argparse._SubParsersAction[Any]) -> argparse._SubParsersAction[Any]:
    """Registers ``models``; returns its actions' subparsers (more actions: commands/__init__)."""
    p = sub.add_parser(
        "models", help="the model registry in Redis: list, show, publish, promote, roll back"
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = msub.add_parser(name, help=help, description=help)
        a.add_argument("--json", action="store_true", help="print one JSON document")
        return a

    ls = action("list", "list the models, or the versions of one model")
    ls.add_argument("name", nargs="?", metavar="NAME", help="list this model's versions")
    ls.set_defaults(handler=_list)

    show = action(
        "show", "describe a version: NAME (active, else latest), NAME:VERSION, NAME:ALIAS"
    )
    show.add_argument("ref", metavar="NAME[:VERSION]")
    show.add_argument(
        "--verify", action="store_true", help="also download the weights and check their sha256"
    )
    show.set_defaults(handler=_show)

    pub = action("publish", "publish a model directory as a new immutable version")
    pub.add_argument("dir", metavar="DIR", help="holds metadata.json and weights.safetensors")
    pub.add_argument("--name", required=True, help="the model's name, e.g. ecg")
    pub.add_argument("--promote", action="store_true", help="make it active (or --alias)")
    pub.add_argument("--alias", default=ACTIVE, help="alias moved by --promote (default active)")
    pub.set_defaults(handler=_publish)

    pro = action("promote", "point the active alias (or --alias) at a version")
    pro.add_argument("name", metavar="NAME")
    pro.add_argument("version", metavar="VERSION")
    pro.add_argument("--alias", default=ACTIVE, help="the alias to move (default active)")
    pro.set_defaults(handler=_promote)

    rb = action("rollback", "move the active alias (or --alias) back to its previous version")
    rb.add_argument("name", metavar="NAME")
    rb.add_argument("--alias", default=ACTIVE, help="the alias to roll back (default active)")
    rb.set_defaults(handler=_rollback)

    de = action("delete", "delete a version that no alias points to")
    de.add_argument("name", metavar="NAME")
    de.add_argument("version", metavar="VERSION")
    de.set_defaults(handler=_delete)

    hi = action("history", "every alias move of a model, oldest first")
    hi.add_argument("name", metavar="NAME")
    hi.add_argument("--alias", default=None, help="only this alias")
    hi.set_defaults(handler=_history)

    un = action("unalias", "remove an alias other than active")
    un.add_argument("name", metavar="NAME")
    un.add_argument("alias", metavar="ALIAS")
    un.set_defaults(handler=_unalias)

    dm = action("demo", "train and promote the synthetic demo model unless NAME has an active one")
    dm.add_argument("--name", default=None, help="model name (default SEQ2GMM_WORKER__MODEL)")
    dm.set_defaults(handler=_demo)
    return msub


# --------------------------------------------------------------------------------- output


def _emit(doc: Any) -> None:
    print(json.dumps(json_safe(doc), indent=2, allow_nan=False))


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _kind(md: Any) -> str:
    """The detector kind (checkpoints name it ``kind``)."""
    return str(md.get("kind") or md.get("detector") or "-")


def _threshold(md: Any) -> str:
    """The decision threshold: a number, or a checkpoint's ``{"value", "method", ...}``."""
    t = md.get("threshold")
    if isinstance(t, dict):
        method = f" ({t['method']})" if t.get("method") else ""
        return _num(t.get("value")) + method
    return _num(t)


def _window(md: Any) -> str:
    length, hop = md.get("window_length"), md.get("hop")
    if length is None:
        return "-"
    return f"{length} samples" + (f", hop {hop}" if hop is not None else "")


def _info_dict(info: VersionInfo) -> dict[str, Any]:
    return {**info.to_dict(), "created": _when(info.created_at)}


# -------------------------------------------------------------------------------- actions


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        if args.name is None:
            models = reg.list_models()
            if args.json:
                _emit({"models": [m.to_dict() for m in models]})
                return 0
            if not models:
                print("no models yet; publish one with: seq2gmm models publish DIR --name NAME")
                return 0
            rows = [
                (
                    m.name,
                    m.versions,
                    m.latest,
                    m.aliases.get(ACTIVE),
                    ", ".join(f"{a}={v}" for a, v in m.aliases.items() if a != ACTIVE) or "-",
                )
                for m in models
            ]
            print(_table(["NAME", "VERSIONS", "LATEST", "ACTIVE", "OTHER ALIASES"], rows))
            return 0
        name = validate_name(args.name)
        versions = reg.list_versions(name)
        if args.json:
            _emit(
                {
                    "name": name,
                    "aliases": reg.aliases(name),
                    "versions": [_info_dict(v) for v in versions],
                }
            )
            return 0
        if not versions:
            print(f"{name} has no versions")
            return 0
        vrows = [
            (
                v.version,
                _when(v.created_at),
                _kind(v.metadata),
                _threshold(v.metadata),
                _size(v.size),
                v.sha256[:12] or "-",
                ",".join(v.aliases) or "-",
                v.problem or "",
            )
            for v in versions
        ]
        headers = ["VERSION", "CREATED", "DETECTOR", "THRESHOLD", "SIZE", "SHA256", "ALIASES", ""]
        print(_table(headers, vrows))
    return 0


def _resolve_ref(reg: ModelRegistry, ref: str) -> tuple[str, int, str | None]:
    """(name, version, note) for NAME, NAME:VERSION or NAME:ALIAS."""
    name, target = parse_ref(ref)
    if isinstance(target, int):
        return name, target, None
    alias = target or ACTIVE
    version = reg.resolve(name, alias)
    if version is not None:
        return name, version, None
    if target is not None:
        raise ModelNotFoundError(
            f"{name} has no alias {alias}; see its aliases with `seq2gmm models list {name}`"
        )
    versions = reg.list_versions(name)
    if not versions:
        raise ModelNotFoundError(
            f"there is no model {name}; see the models with `seq2gmm models list`"
        )
    return name, versions[-1].version, "no active version; showing the latest"


def _show(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        name, version, note = _resolve_ref(reg, args.ref)
        info = reg.info(name, version)
        verified = None
        if args.verify:
            reg.get(name, version)  # raises CorruptVersionError with advice
            verified = True
        if args.json:
            _emit({**_info_dict(info), "verified": verified, "note": note})
            return 0
        if note:
            print(f"({note})")
        md = info.metadata
        lines = [
            ("model", f"{name}:{version}"),
            ("aliases", ", ".join(info.aliases) or "-"),
            ("created", _when(info.created_at)),
            ("detector", _kind(md)),
            ("threshold", _threshold(md)),
            ("window", _window(md)),
            ("features", _num(md.get("n_features"))),
            ("size", _size(info.size) + (f" ({info.size} bytes)" if info.size >= 1024 else "")),
            ("sha256", info.sha256 or "-"),
            ("published by", ", ".join(f"{k}={v}" for k, v in info.publisher.items()) or "-"),
        ]
        if verified:
            lines.append(("verified", "sha256 matches the stored weights"))
        if info.problem:
            lines.append(("problem", info.problem))
        for key, value in lines:
            print(f"{key + ':':14}{value}")
        print("metadata:")
        print(json.dumps(json_safe(dict(md)), indent=2, sort_keys=True))
    return 0


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        name = validate_name(args.name)
        version = reg.publish_dir(args.dir, name, promote=args.promote, alias=args.alias)
        aliases = reg.aliases(name)
        if args.json:
            _emit(
                {
                    "name": name,
                    "version": version,
                    "promoted": bool(args.promote),
                    "aliases": aliases,
                    "sha256": reg.info(name, version).sha256,
                }
            )
            return 0
        print(f"published {name}:{version}")
        if args.promote:
            print(f"{name}:{args.alias} -> {version}")
        else:
            print(f"make it active with: seq2gmm models promote {name} {version}")
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        name = validate_name(args.name)
        version = validate_version(args.version)
        entry = reg.promote(name, version, alias=args.alias)
        if args.json:
            _emit(
                {
                    "name": name,
                    "alias": args.alias,
                    "version": version,
                    "changed": entry is not None,
                    "entry": entry.to_dict() if entry else None,
                }
            )
            return 0
        if entry is None:
            print(f"{name}:{args.alias} already is version {version}")
        else:
            print(f"{name}:{args.alias} {_num(entry.from_version)} -> {version}")
    return 0


def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        name = validate_name(args.name)
        entry = reg.rollback(name, alias=args.alias)
        if args.json:
            _emit(
                {
                    "name": name,
                    "alias": args.alias,
                    "version": entry.to_version,
                    "entry": entry.to_dict(),
                }
            )
            return 0
        print(f"{name}:{args.alias} rolled back {_num(entry.from_version)} -> {entry.to_version}")
    return 0


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        name = validate_name(args.name)
        version = validate_version(args.version)
        reg.delete(name, version)
        if args.json:
            _emit({"name": name, "version": version, "deleted": True})
            return 0
        print(f"deleted {name}:{version}")
    return 0


def _history(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        name = validate_name(args.name)
        entries = reg.history(name, alias=args.alias)
        gates = reg.gate_decisions(name)  # `seq2gmm retrain`'s decisions
        if args.json:
            _emit({"name": name, "history": [e.to_dict() for e in entries], "gates": gates})
            return 0
        for g in gates:
            print(f"{_when(g['time'])}  retrain gate: {g['summary']}")
        if not entries:
            print(f"{name} has no alias moves yet")
            return 0
        rows = [
            (
                e.seq,
                _when(e.time),
                e.alias,
                e.action + (f" (undoes #{e.undoes})" if e.undoes else ""),
                _num(e.from_version),
                _num(e.to_version),
            )
            for e in entries
        ]
        print(_table(["#", "TIME", "ALIAS", "ACTION", "FROM", "TO"], rows))
    return 0


def _unalias(args: argparse.Namespace, settings: Settings) -> int:
    with open_registry(settings) as reg:
        name = validate_name(args.name)
        entry = reg.remove_alias(name, args.alias)
        if args.json:
            _emit({"name": name, "alias": args.alias, "removed": entry is not None})
            return 0
        print(f"removed {name}:{args.alias}" if entry else f"{name} had no alias {args.alias}")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from worker.dev.demo import ensure_demo_model

    name = validate_name(args.name or settings.worker.model)
    with open_registry(settings) as reg:
        version = ensure_demo_model(reg, name)
    if args.json:
        _emit({"name": name, "active": version})
    else:
        print(f"{name}:active -> {version}")
    return 0
