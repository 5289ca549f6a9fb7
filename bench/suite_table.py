"""The table of bench/suite.py, built from its ``results.jsonl`` lines.

Per protocol: one row per dataset with the ROC AUC mean ± std (population, over seeds) of each
detector; then the mean over datasets of the per-dataset seed means (± the std over seeds of
the dataset mean), wins against knn (datasets where the seed-mean ROC AUC >= knn's), the mean
rank (1 = best, ties averaged, over the datasets every detector finished), the false-alarm rate
at the inferred threshold on the normal test rows (mean and largest over datasets with at least
100 normal test rows) and the mean fit and score seconds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from scipy.stats import rankdata

PROTOCOLS = {
    "reference": "normal TEST rows + 10 % as many other-class rows (the Seq2GMM reference's)",
    "full": "every TEST row, label 1 for every row not of the normal class",
}
MIN_NORMAL = 100  # normal test rows a dataset needs to enter the false-alarm rows
Cells = dict[tuple[str, str], list[dict[str, Any]]]


def column(rec: dict[str, Any]) -> str:
    return f"{rec['detector']}={rec['spec']}"


def _grid(records: list[dict[str, Any]]) -> Cells:
    """The latest record of each job, grouped by (column, dataset), sorted by seed."""
    latest = {(column(r), r["dataset"], int(r["seed"])): r for r in records}
    cells: Cells = defaultdict(list)
    for (col, ds, _), rec in sorted(latest.items()):
        cells[(col, ds)].append(rec)
    return cells


def _cell(recs: list[dict[str, Any]], protocol: str) -> dict[str, Any]:
    ok = [r for r in recs if "error" not in r]
    roc = {int(r["seed"]): r["protocols"][protocol]["roc_auc"] for r in ok}
    vals = np.asarray(list(roc.values()), dtype=np.float64)
    far = [r["protocols"][protocol]["false_alarm"] for r in ok]
    return {
        "per_seed": roc,
        "mean": float(vals.mean()) if vals.size else None,
        "std": float(vals.std()) if vals.size else None,
        "errors": len(recs) - len(ok),
        "false_alarm": float(np.mean(far)) if far else None,
    }


def _sizes(cells: Cells, ds: str, protocol: str) -> dict[str, int] | None:
    for (_, d), recs in cells.items():
        for r in recs:
            if d == ds and "error" not in r:
                p = r["protocols"][protocol]
                return {"n_train": r["n_train"], "n_normal_test": r["n_normal_test"],
                        "n_test": p["n_test"], "n_anomalous": p["n_anomalous"]}  # fmt: skip
    return None


def _knn_column(cols: list[str]) -> str | None:
    for want in (lambda c: c == "knn=knn", lambda c: c.endswith("=knn"),
                 lambda c: c.startswith("knn=")):  # fmt: skip
        found = [c for c in cols if want(c)]
        if found:
            return found[0]
    return None


def _mean_over_datasets(per_ds: dict[str, dict[str, Any]], col: str) -> dict[str, Any]:
    cells = [per_ds[ds][col] for ds in per_ds if per_ds[ds][col]["mean"] is not None]
    seeds = sorted({s for c in cells for s in c["per_seed"]})
    by_seed = [np.mean([c["per_seed"][s] for c in cells if s in c["per_seed"]]) for s in seeds]
    return {
        "mean": float(np.mean([c["mean"] for c in cells])) if cells else None,
        "std_over_seeds": float(np.std(by_seed)) if by_seed else None,
        "n_datasets": len(cells),
    }


def _ranks(per_ds: dict[str, dict[str, Any]], cols: list[str]) -> tuple[dict[str, float], int]:
    """Mean rank per column over the datasets where every column has a seed mean (columns
    without any are left out)."""
    cols = [c for c in cols if any(per_ds[ds][c]["mean"] is not None for ds in per_ds)]
    complete = [ds for ds in per_ds if all(per_ds[ds][c]["mean"] is not None for c in cols)]
    if not complete:
        return {}, 0
    ranks = np.array([rankdata([-per_ds[ds][c]["mean"] for c in cols]) for ds in complete])
    return {c: float(ranks[:, i].mean()) for i, c in enumerate(cols)}, len(complete)


def _false_alarms(per_ds: dict[str, Any], sizes: dict[str, Any], col: str) -> dict[str, Any]:
    rates = {ds: per_ds[ds][col]["false_alarm"] for ds in per_ds
             if sizes[ds] and sizes[ds]["n_normal_test"] >= MIN_NORMAL
             and per_ds[ds][col]["false_alarm"] is not None}  # fmt: skip
    if not rates:
        return {"mean": None, "max": None, "max_dataset": None, "n_datasets": 0}
    worst = max(rates, key=lambda d: rates[d])
    return {"mean": float(np.mean(list(rates.values()))), "max": rates[worst],
            "max_dataset": worst, "n_datasets": len(rates)}  # fmt: skip


def protocol_summary(cells: Cells, cols: list[str], datasets: list[str], protocol: str) -> Any:
    """Every number of one protocol's table."""
    per_ds = {ds: {c: _cell(cells.get((c, ds), []), protocol) for c in cols} for ds in datasets}
    sizes = {ds: _sizes(cells, ds, protocol) for ds in datasets}
    knn = _knn_column(cols)
    wins = {}
    for c in cols:
        pairs = [(per_ds[ds][c]["mean"], per_ds[ds][knn]["mean"]) for ds in datasets] if knn else []
        wins[c] = sum(a >= b for a, b in pairs if a is not None and b is not None)
    ranks, n_ranked = _ranks(per_ds, cols)
    ok = {c: [r for ds in datasets for r in cells.get((c, ds), []) if "error" not in r]
          for c in cols}  # fmt: skip
    return {
        "description": PROTOCOLS[protocol],
        "sizes": sizes,
        "per_dataset": per_ds,
        "mean_over_datasets": {c: _mean_over_datasets(per_ds, c) for c in cols},
        "wins_vs_knn": {"knn_column": knn, **wins} if knn else None,
        "mean_rank": {"n_datasets": n_ranked, **ranks},
        "false_alarm": {c: _false_alarms(per_ds, sizes, c) for c in cols},
        "fit_seconds_mean": {c: _mean([r["fit_seconds"] for r in ok[c]]) for c in cols},
        "score_seconds_mean": {c: _mean([r["score_seconds"] for r in ok[c]]) for c in cols},
    }


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _cell_text(c: dict[str, Any]) -> str:
    text = "ERROR" if c["mean"] is None else f"{c['mean']:.3f} ± {c['std']:.3f}"
    if c["errors"] and c["mean"] is not None:
        text += f" ({c['errors']} err)"
    return text if c["mean"] is not None or c["errors"] else "–"


def _mean_text(m: dict[str, Any], n_datasets: int) -> str:
    if m["mean"] is None:
        return "–"
    text = f"**{m['mean']:.3f}** ± {m['std_over_seeds']:.3f}"
    return text if m["n_datasets"] == n_datasets else f"{text} ({m['n_datasets']} sets)"


def protocol_markdown(s: dict[str, Any], protocol: str, cols: list[str], labels: list[str],
                      fpr: str) -> list[str]:  # fmt: skip
    """The lines of one protocol's table."""
    lines = [f"## Protocol `{protocol}`: {s['description']}", "",
             "| dataset | test (anomalous) | " + " | ".join(labels) + " |",
             "|---|---:|" + "---:|" * len(cols)]  # fmt: skip

    def row(name: str, values: list[str], extra: str = "") -> None:
        lines.append(f"| {name} | {extra} | " + " | ".join(values) + " |")

    for ds, cells in s["per_dataset"].items():
        size = s["sizes"][ds]
        row(ds, [_cell_text(cells[c]) for c in cols],
            f"{size['n_test']} ({size['n_anomalous']})" if size else "")  # fmt: skip
    means = s["mean_over_datasets"]
    row("**mean over datasets**", [_mean_text(means[c], len(s["sizes"])) for c in cols])
    wins = s["wins_vs_knn"]
    row("wins vs knn (ROC >=)", [str(wins[c]) if wins else "–" for c in cols])
    rank = s["mean_rank"]
    row(f"mean rank ({rank['n_datasets']} sets)", [_f(rank.get(c), ".2f") for c in cols])
    far = s["false_alarm"]
    n_far = max((far[c]["n_datasets"] for c in cols), default=0)
    row(f"false alarms @ fpr {fpr}, mean ({n_far} sets >= {MIN_NORMAL} normal)",
        [_f(far[c]["mean"]) for c in cols])  # fmt: skip
    row("false alarms, largest", [
        "–" if far[c]["max"] is None else f"{far[c]['max']:.3f} {far[c]['max_dataset']}"
        for c in cols])  # fmt: skip
    row("fit s (mean)", [_f(s["fit_seconds_mean"][c], ".2f") for c in cols])
    row("score s (mean)", [_f(s["score_seconds_mean"][c], ".2f") for c in cols])
    return [*lines, ""]


def _order(records: list[dict[str, Any]], columns: list[str]) -> tuple[list[str], list[str]]:
    present = list(dict.fromkeys(column(r) for r in records))
    cols = [c for c in columns if c in present] + [c for c in present if c not in columns]
    return cols, sorted({r["dataset"] for r in records})


def build_table(records: list[dict[str, Any]], columns: list[str]) -> tuple[str, dict[str, Any]]:
    """(markdown, summary) of every record; ``columns`` (``name=spec``) first, in order."""
    cols, datasets = _order(records, columns)
    cells = _grid(records)
    names = [c.split("=", 1)[0] for c in cols]
    labels = [n if names.count(n) == 1 else c for n, c in zip(names, cols, strict=True)]
    seeds = sorted({int(r["seed"]) for r in records})
    fprs = sorted({r.get("threshold_fpr") for r in records}, key=str)
    fpr = ", ".join(str(f) for f in fprs)
    protocols = {p: protocol_summary(cells, cols, datasets, p) for p in PROTOCOLS}
    errors = [{"job": f"{column(r)} {r['dataset']} seed {r['seed']}", **r["error"]}
              for recs in cells.values() for r in recs if "error" in r]  # fmt: skip
    lines = [f"# Accuracy suite: ROC AUC, mean ± std over seeds {seeds}", "",
             "Detectors: " + ", ".join(f"`{c}`" for c in cols) + f". Threshold: normal "
             f"reference scores, fpr {fpr}.", ""]  # fmt: skip
    for p, s in protocols.items():
        lines += protocol_markdown(s, p, cols, labels, fpr)
    if errors:
        lines += ["## Errors", ""]
        lines += [f"- {e['job']}: {e['type']}: {e['message'][:300]}" for e in errors]
        lines.append("")
    summary = {"seeds": seeds, "columns": cols, "datasets": datasets, "threshold_fpr": fprs,
               "n_records": sum(len(v) for v in cells.values()), "protocols": protocols,
               "errors": errors}  # fmt: skip
    return "\n".join(lines), summary
