"""Evaluation: datasets, protocols, metrics, plots and reports (offline; never served).

- :mod:`~model.evaluation.data`: UCR and CSV readers, one-class splits, sliding windows;
- :mod:`~model.evaluation.synthetic`: quasi-periodic series with injected anomalies;
- :mod:`~model.evaluation.metrics`: ROC/PR AUC, F1, point-adjusted F1;
- :mod:`~model.evaluation.oneclass`: the UCR one-class protocol;
- :mod:`~model.evaluation.series`: the long-series protocol (NAB, KPI);
- :mod:`~model.evaluation.cycles`: a continuous series cut into labelled cycles, the oracle
  cutter from annotations, the train/test protocol on cycles;
- :mod:`~model.evaluation.mitdb`: the MIT-BIH record reader (format 212, beat annotations);
- :mod:`~model.evaluation.plots`, :mod:`~model.evaluation.report`: figures and the HTML
  report (matplotlib, an optional extra, imported only where a figure is drawn).
"""
