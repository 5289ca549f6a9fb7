"""The long-series evaluation protocol shared by every detector (NAB and KPI series).

- :mod:`.splits`: the series split in time (:func:`nab_split`, :func:`kpi_split`,
  :func:`make_split` for any labelled series);
- :mod:`.protocol`: scoring the test ranges, window scores to point scores, the metrics
  (:func:`evaluate_series`).

    split = nab_split("../shared/data", "machine_temp")        # or kpi_split(root, "cpu4")
    report = evaluate_series(make_detector("vae-lstm"), split, seed=0)
"""

from model.evaluation.series.protocol import (
    PAPER_THRESHOLDS,
    SCORE_BATCH,
    SeriesReport,
    SeriesScores,
    best_f1_grid,
    evaluate_series,
    paper_window_labels,
    paper_window_metrics,
    score_series,
    training_labels,
    window_to_point_scores,
)
from model.evaluation.series.splits import (
    KPI_SERIES,
    NAB_SERIES,
    SeriesSplit,
    kpi_split,
    load_split,
    make_split,
    nab_point_labels,
    nab_split,
)

__all__ = [
    "KPI_SERIES",
    "NAB_SERIES",
    "PAPER_THRESHOLDS",
    "SCORE_BATCH",
    "SeriesReport",
    "SeriesScores",
    "SeriesSplit",
    "best_f1_grid",
    "evaluate_series",
    "kpi_split",
    "load_split",
    "make_split",
    "nab_point_labels",
    "nab_split",
    "paper_window_labels",
    "paper_window_metrics",
    "score_series",
    "training_labels",
    "window_to_point_scores",
]
