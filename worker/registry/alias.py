"""The model behind a second alias of the served model, for shadow scoring.

:class:`AliasModels` is the stream's :class:`~worker.stream.shadow.ShadowSource`: an
:class:`~worker.registry.watcher.ActiveModelWatcher` follows the alias (e.g. ``candidate``) in
its background thread, exactly as the active one is followed (fetched, verified, loaded before
it is served; Redis never on the loop's path), but with no local cache: the cache keeps one
copy per model name, the active version's. Unlike the active model, a shadow stops when its
alias is removed: :meth:`current` returns None once a read of the pointer found it unset.
"""

from __future__ import annotations

from typing import Any

from worker.registry.loader import RegistryModels
from worker.registry.watcher import ActiveModelWatcher
from worker.stream.served import ServedModel


class AliasModels:
    def __init__(self, watcher: ActiveModelWatcher[Any]) -> None:
        self.watcher = watcher

    def current(self) -> ServedModel | None:
        """The alias's loaded model now (no I/O), None while unset, removed or not loaded."""
        self.watcher.start()
        loaded = self.watcher.current()
        if loaded is None or self.watcher.pointer() is None:
            return None
        model: ServedModel = loaded.model
        return model


def alias_watcher(
    reader: Any, name: str, alias: str, device: Any, poll_interval_s: float
) -> ActiveModelWatcher[Any]:
    """A watcher of ``name``'s ``alias`` with the worker's loader and no local cache."""
    return ActiveModelWatcher(
        reader,
        name,
        loader=RegistryModels.loader(device, warm=True),
        poll_interval_s=poll_interval_s,
        alias=alias,
        cache=None,
    )
