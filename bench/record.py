"""What every benchmark's JSON output records: the machine, the command that reproduces the run,
its wall-clock seconds and the dataset split it measured."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU, core count, torch threads and library versions, plus ``extra`` entries."""
    import numpy as np
    import torch

    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        **extra,
    }


def run_record(script: str, started: float, **extra: Any) -> dict[str, Any]:
    """The command that reproduces a benchmark run, its machine and its wall-clock seconds."""
    import sys
    import time

    return {
        "command": " ".join([".venv/bin/python", f"bench/{script}", *sys.argv[1:]]),
        "machine": machine_info(**extra),
        "total_seconds": time.perf_counter() - started,
    }


def data_missing(path: Path) -> bool:
    """True (after saying what to pass) when the shared dataset folder ``path`` is absent."""
    import sys

    if path.is_dir():
        return False
    print(f"data not found at {path}; pass --data PATH/TO/shared/data", file=sys.stderr)
    return True


def split_record(split: Any) -> dict[str, Any]:
    """Sizes of a one-class split (:class:`model.evaluation.data.OneClassSplit`)."""
    return {
        "normal_label": split.normal_label,
        "n_train": len(split.train),
        "n_test": len(split.test),
        "n_anomalous": split.n_anomalous,
        "window_length": int(split.train[0].shape[0]),
    }


def seed_summary(values: list[float]) -> dict[str, Any]:
    """One metric over seeds: the values, their mean and population std (ddof=0)."""
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    return {"per_seed": [float(v) for v in arr], "mean": float(arr.mean()), "std": float(arr.std())}
