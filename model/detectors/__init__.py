"""The detector kinds, one file or folder each, all behind :class:`model.base.Detector`.

- :mod:`~model.detectors.seq2gmm`: the product's detector (segments -> compression network ->
  Gaussian mixture);
- :mod:`~model.detectors.dagmm`: TS-DAGMM; :mod:`~model.detectors.vae_lstm`: VAE-LSTM;
  :mod:`~model.detectors.classifier`: a supervised window classifier (each a folder of
  ``config``, ``network`` and ``detector`` modules, read in the order its ``__init__`` gives);
- :mod:`~model.detectors.nearest`: the nearest-cycle detector (``knn``: 1-NN on windows
  resampled to one length; Euclidean, banded DTW or SBD);
- :mod:`~model.detectors.baselines`: Isolation Forest, one-class SVM, LSTM autoencoder
  (evaluation only).

:mod:`model.kinds` maps the command-line names to these classes; the setup they share
(window checks, padding, the held-out split, input standardisation, seeding) is in
:mod:`model.fitting`.
"""
