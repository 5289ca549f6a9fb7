"""Shadow scoring: the same windows scored by the version behind a second alias too.

With ``SEQ2GMM_WORKER__SHADOW_ALIAS`` (e.g. ``candidate``) set, the worker follows that alias of
its model beside ``active``. Each microbatch fixes its shadow model when it is taken (like the
active one, so a move of either alias never splits a batch) and, after the active model scored
it, the shadow model scores the same windows; its records (same schema, the shadow version in
``model``) go to the shadow topic (``SEQ2GMM_KAFKA__SHADOW_TOPIC``, ``ts.anomalies.shadow``)
through the same publish -> flush -> commit checkpoint as the active ones.

The windows are cut once, with the active model's cutter; a shadow version that cuts series
differently (another cutter config) or expects another width cannot share them:
:class:`ShadowGate` logs ``shadow_incompatible`` once per version and skips it (counted as
``skipped`` windows). A shadow failure never touches the active records: nothing of it is
dead-lettered, the windows it could not score are logged and counted as ``failed``.

Per window scored by both, the agreement is counted: ``both`` flagged, ``active_only``,
``shadow_only`` or ``neither`` (``seq2gmm_shadow_windows_total{agreement=...}``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from model.errors import Seq2GMMError
from worker.stream.served import ScoredWindow, ServedModel

if TYPE_CHECKING:
    from worker.stream.core import Batch, OutRecord
    from worker.stream.windowing import Window

log = structlog.get_logger()

AGREEMENTS = ("both", "active_only", "shadow_only", "neither")


class ShadowSource(Protocol):
    """Where the shadow model comes from (an alias of the registry in production)."""

    def current(self) -> ServedModel | None:
        """The model behind the shadow alias now (no I/O), None while the alias is unset."""
        ...


RecordBuilder = Callable[[ServedModel, "Window", ScoredWindow], "OutRecord | None"]


class ShadowGate:
    """Decides, when a batch is taken, whether the shadow model scores it; keeps the counts
    (agreement per window, ``failed`` and ``skipped`` windows) the core exports."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._warned: set[tuple[str, int, int]] = set()  # (name, shadow version, active version)

    def admit(
        self, active: ServedModel, shadow: ServedModel | None, windows: int
    ) -> ServedModel | None:
        """``shadow`` when it can score the active model's windows, else None."""
        if shadow is None:
            return None
        if (shadow.cutter.to_config(), shadow.n_features) == (
            active.cutter.to_config(),
            active.n_features,
        ):
            return shadow
        self.counters["skipped"] += windows
        key = (shadow.name, shadow.version, active.version)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "shadow_incompatible",
                shadow=f"{shadow.name}:{shadow.version}",
                active=f"{active.name}:{active.version}",
                shadow_cycles=shadow.cutter.to_config(),
                active_cycles=active.cutter.to_config(),
                shadow_features=shadow.n_features,
                active_features=active.n_features,
                hint="the shadow version cuts series differently from the active one, so it"
                " cannot score the same windows; it is skipped (compare it with a backtest)",
            )
        return None


def score_shadow(
    batch: Batch, pairs: list[tuple[Window, ScoredWindow]], build: RecordBuilder
) -> None:
    """Score ``batch``'s windows with its shadow model; fill its shadow records and agreement.

    ``pairs``: the windows the active model scored, with their scores. Never raises: any
    failure of the shadow model is logged and its windows counted as ``failed``."""
    shadow = batch.shadow
    assert shadow is not None
    try:
        scored = _score(shadow, batch.windows)
    except Exception as exc:  # a broken candidate must never stop the active model's work
        log.error("shadow_scoring_failed", version=shadow.version, error=f"{exc!r}"[:300])
        batch.agreement["failed"] += len(batch.windows)
        return
    active = {id(w): s.energy > batch.model.threshold for w, s in pairs}
    records: list[OutRecord] = []
    for w, s in zip(batch.windows, scored, strict=True):
        if s is None:
            batch.agreement["failed"] += 1
            continue
        flagged = s.energy > shadow.threshold
        if id(w) in active:
            batch.agreement[_agreement(active[id(w)], flagged)] += 1
        rec = build(shadow, w, s)
        if rec is not None:
            records.append(rec)
    batch.shadow_records = records


def _agreement(active: bool, shadow: bool) -> str:
    if active:
        return "both" if shadow else "active_only"
    return "shadow_only" if shadow else "neither"


def _score(model: ServedModel, windows: list[Window]) -> list[ScoredWindow | None]:
    """Per window its score, or None for a window the model refuses (scored one by one once
    the whole batch was refused)."""
    try:
        return list(model.score([w.values for w in windows]))
    except Seq2GMMError:
        pass
    out: list[ScoredWindow | None] = []
    for w in windows:
        try:
            out.append(model.score([w.values])[0])
        except Seq2GMMError as exc:
            log.warning("shadow_window_refused", series_id=w.series_id, error=str(exc)[:200])
            out.append(None)
    return out
