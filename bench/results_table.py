"""One results table from the benchmark outputs in docs/bench: every detector, every dataset.

    .venv/bin/python bench/results_table.py [--metric roc_auc|pr_auc|best_f1] [FILE.json ...]

Reads the JSON written by accuracy_baselines.py and accuracy_seq2gmm.py (UCR one-class
protocol), accuracy_series.py (NAB / KPI long-series protocol) and accuracy_classifier.py
(KPI, supervised), and prints a markdown table of ``mean ± std`` over seeds per detector and
dataset. Without FILE arguments it reads every docs/bench/*.json except the ablations and
explorations (:data:`NOT_MAIN`). A detector measured by two files on one dataset keeps the
later file's cell. Cells
without a measurement are "n/m" (not measured) or, for the supervised classifier on data with
no labelled training anomalies, "n/a".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UCR = ["TwoLeadECG", "ECG5000", "ECG200", "GunPoint"]
NAB = ["machine_temp", "ambient_temp", "cpu_utilization", "ec2_request", "nyc_taxi"]
KPI = ["cpu4", "server_res_eth1out_curve_6", "server_res_eth1out_curve_61"]
COLUMNS = UCR + [f"nab:{n}" for n in NAB] + [f"kpi:{n}" for n in KPI]
SHORT = {"server_res_eth1out_curve_6": "eth1out_6", "server_res_eth1out_curve_61": "eth1out_61"}
#: outputs of ablations and explorations, left out of the main table by default
NOT_MAIN = (
    "reference_inputs",
    "next_rule",
    "w120",
    "w576",
    "faithful",
    "segmentation",
    "ablation",
)
ROWS = ["seq2gmm", "dagmm", "vae-lstm", "classifier", "knn", "iforest", "ocsvm", "lstm-ae"]
Cells = dict[tuple[str, str], dict[str, Any]]


def _cells(doc: dict[str, Any], metric: str) -> Cells:
    """{(detector, column): {"mean", "std"}} of one benchmark output."""
    out: Cells = {}
    kind = doc.get("benchmark")
    for ds, res in doc.get("results", {}).items():
        if kind == "accuracy_seq2gmm":
            entry = res.get("configs", {}).get("default")
            if entry and metric in entry:
                out[("seq2gmm", ds)] = entry[metric]
        elif kind == "accuracy_classifier":
            for arch, entry in res.get("architectures", {}).items():
                if metric in entry:
                    out[(f"classifier ({arch})", f"kpi:{ds}")] = entry[metric]
        else:  # accuracy_baselines (UCR) and accuracy_series (nab:/kpi:)
            for det, entry in res.get("detectors", {}).items():
                if metric in entry:
                    out[(det, ds)] = entry[metric]
    return out


def _fmt(cell: dict[str, Any] | None, row: str, col: str) -> str:
    if cell is None:
        return "n/a" if row.startswith("classifier") and not col.startswith("kpi:") else "n/m"
    if len(cell.get("per_seed", [])) == 1:
        return f"{cell['mean']:.3f} (1 seed)"
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--metric", default="roc_auc")
    args = ap.parse_args(argv)
    files = args.files or [
        f
        for f in sorted((REPO / "docs" / "bench").glob("*.json"))
        if not any(tag in f.name for tag in NOT_MAIN)
    ]
    cells: Cells = {}
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except json.JSONDecodeError:
            print(f"skipping {f}: not a complete JSON document", file=sys.stderr)
            continue
        if isinstance(doc, dict):
            cells.update(_cells(doc, args.metric))
    if not cells:
        print(f"no {args.metric} results in {[str(f) for f in files]}", file=sys.stderr)
        return 1
    rows = [r for r in ROWS if r != "classifier"]
    rows += sorted({det for det, _ in cells if det.startswith("classifier")}) or ["classifier"]
    rows += sorted({det for det, _ in cells} - set(rows))
    head = ["detector", *(SHORT.get(c.split(":")[-1], c.split(":")[-1]) for c in COLUMNS)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join([r, *(_fmt(cells.get((r, c)), r, c) for c in COLUMNS)]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
