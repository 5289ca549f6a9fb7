"""The routing table: matching order, prefixes and globs, edits, its stored form, the store in
the real embedded valkey (atomic changes, concurrent editors, history) and `seq2gmm routes`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import structlog

from worker.cli import main
from worker.dev.services import Endpoints
from worker.registry.connection import connect
from worker.registry.reader import RegistryReader
from worker.registry.routes import RouteStore
from worker.stream.routing import Route, RouteError, RouteTable


def table() -> RouteTable:
    return (
        RouteTable()
        .with_rule("core-", "links")
        .with_rule("*.cpu", "cpu")
        .with_rule("core-lab-", "lab", position=0)
        .with_default("generic")
    )


def test_first_match_wins_prefix_then_glob_then_default() -> None:
    t = table()
    assert [r.pattern for r in t.rules] == ["core-lab-", "core-", "*.cpu"]
    assert t.model_for("core-lab-7") == "lab"  # inserted first, tried first
    assert t.model_for("core-ams-1") == "links"
    assert t.model_for("core-ams-1.cpu") == "links"  # the prefix rule comes before the glob
    assert t.model_for("edge/sw1.cpu") == "cpu"  # * matches / too
    assert t.model_for("edge/sw1.CPU") == "generic"  # globs are case-sensitive
    assert t.model_for("xcore-1") == "generic"  # a prefix anchors at the start
    assert t.match("xcore-1") is None
    assert t.models() == {"lab", "links", "cpu", "generic"}
    assert Route("a?[bc]", "m").is_glob and not Route("a-b", "m").is_glob


def test_no_default_means_no_route_with_a_reason() -> None:
    t = table().with_default(None)
    assert t.model_for("other") is None
    reason = t.no_route_reason("other")
    assert "'other'" in reason and "seq2gmm routes add" in reason


def test_edits_make_new_tables_and_replace_in_place() -> None:
    t = table()
    t2 = t.with_rule("core-", "backbone")  # same pattern: replaced where it stands
    assert [(r.pattern, r.model) for r in t2.rules][1] == ("core-", "backbone")
    assert t.model_for("core-x") == "links" and t2.model_for("core-x") == "backbone"
    t3 = t2.with_rule("core-", "backbone", position=0)  # moved first
    assert t3.rules[0].pattern == "core-"
    assert [r.pattern for r in t3.without_rule("core-").rules] == ["core-lab-", "*.cpu"]
    with pytest.raises(RouteError, match="routes list"):
        t.without_rule("nope")
    for bad_pattern, bad_model in (("", "m"), ("x" * 300, "m"), ("a\nb", "m"), ("a", "bad name")):
        with pytest.raises(Exception) as exc:
            t.with_rule(bad_pattern, bad_model)
        assert isinstance(exc.value, RouteError) or "invalid model name" in str(exc.value)


def test_stored_form_round_trips_and_malformed_is_refused() -> None:
    t = table()
    back = RouteTable.from_json(t.to_json())
    assert back == t and back.model_for("core-lab-1") == "lab"
    for bad in (
        "{",
        "[]",
        '{"rules": [{"pattern": "a"}]}',
        '{"rules": [], "default": 3}',
        '{"rules": [{"pattern": "a", "model": "no spaces"}]}',
    ):
        with pytest.raises(RouteError):
            RouteTable.from_json(bad)


@pytest.fixture
def store(services: Endpoints, unique: str) -> Iterator[RouteStore]:
    reader = RegistryReader(connect(services.redis_url), unique)
    yield RouteStore(reader)
    reader.close()


def test_store_changes_count_revisions_and_keep_history(store: RouteStore) -> None:
    assert store.get() == RouteTable()
    store.add("core-", "links")
    store.add("*.cpu", "cpu", position=0)
    t = store.set_default("generic")
    assert t.revision == 3 and store.get() == t
    assert [r.pattern for r in store.get().rules] == ["*.cpu", "core-"]
    t = store.remove("*.cpu")
    assert t.revision == 4 and store.revision() == 4
    actions = [(e["action"], e["revision"]) for e in store.history()]
    assert actions == [("add", 1), ("add", 2), ("default", 3), ("remove", 4)]


def test_concurrent_editors_lose_no_change(services: Endpoints, unique: str) -> None:
    readers = [RegistryReader(connect(services.redis_url), unique) for _ in range(4)]
    stores = [RouteStore(r) for r in readers]

    errors: list[BaseException] = []

    def edit(i: int) -> None:
        try:
            for j in range(10):
                stores[i].add(f"s{i}-{j}-", f"m{i}")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    final = stores[0].get()
    assert final.revision == 40 and len(final.rules) == 40
    assert {r.pattern for r in final.rules} == {f"s{i}-{j}-" for i in range(4) for j in range(10)}
    for r in readers:
        r.close()


def test_routes_cli(
    services: Endpoints,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEQ2GMM_REDIS__URL", services.redis_url)
    monkeypatch.setenv("SEQ2GMM_REDIS__KEY_PREFIX", unique)
    try:
        assert main(["routes", "add", "core-", "links"]) == 0
        assert main(["routes", "add", "*.cpu", "cpu", "--position", "0"]) == 0
        capsys.readouterr()
        assert main(["routes", "list"]) == 0
        out = capsys.readouterr().out
        assert out.index("'*.cpu'") < out.index("'core-'") and "revision 2" in out
        assert main(["routes", "test", "edge.cpu"]) == 0
        assert "edge.cpu -> cpu" in capsys.readouterr().out
        assert main(["routes", "test", "nothing"]) == 1  # no route, no default
        assert "no route for series 'nothing'" in capsys.readouterr().out
        assert main(["routes", "default", "generic"]) == 0
        capsys.readouterr()
        assert main(["routes", "test", "nothing", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["model"] == "generic" and got["by_default"] and got["active_version"] is None
        assert main(["routes", "remove", "missing"]) == 1
        assert "routes list" in capsys.readouterr().err
        assert main(["routes", "default", "--none", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["default"] is None
    finally:
        structlog.reset_defaults()
