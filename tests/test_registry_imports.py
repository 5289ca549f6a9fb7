"""The registry is production code: it takes a Redis URL or client and never reaches into the
development services (``worker.dev``), neither directly nor through what it imports. (The
source-level rule for every module is in ``test_architecture.py``; this one imports for real.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "worker" / "registry"

# Imports every module of worker.registry in a fresh interpreter and reports what got loaded.
PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import worker.registry as package

    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__, "worker.registry."))
    for name in names:
        importlib.import_module(name)
    print(json.dumps({
        "package": package.__file__,
        "modules": names,
        "dev": sorted(m for m in sys.modules if m == "worker.dev" or m.startswith("worker.dev.")),
    }))
    """
)


def test_importing_the_registry_loads_nothing_of_worker_dev() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout)
    assert Path(report["package"]).resolve().is_relative_to(REGISTRY)  # this checkout's code
    assert {"worker.registry.store", "worker.registry.watcher"} <= set(report["modules"])
    assert report["dev"] == [], f"importing worker.registry loaded {report['dev']}"
