"""Seq2GMM (kind ``seq2gmm``), the product's detector, read in this order:

- :mod:`~model.detectors.seq2gmm.config`: every setting, the named configurations;
- :mod:`~model.detectors.seq2gmm.descriptors`: each segment's context and hand-made
  descriptors;
- :mod:`~model.detectors.seq2gmm.network`: the compression and estimation networks;
- :mod:`~model.detectors.seq2gmm.train`: the training loop and model selection;
- :mod:`~model.detectors.seq2gmm.score`: from segment energies to window scores;
- :mod:`~model.detectors.seq2gmm.detector`: :class:`Seq2GMMDetector`, fit/score/checkpoint.
"""
