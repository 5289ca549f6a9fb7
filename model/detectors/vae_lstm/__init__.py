"""VAE-LSTM (kind ``vae-lstm``), read in this order:

- :mod:`~model.detectors.vae_lstm.config`: :class:`VAELSTMConfig`, every setting;
- :mod:`~model.detectors.vae_lstm.network`: the sub-window VAE and the code predictor;
- :mod:`~model.detectors.vae_lstm.detector`: :class:`VAELSTMDetector`, the two training
  stages, scoring and checkpoints, with where it differs from the reference.
"""

from model.detectors.vae_lstm.config import VAELSTMConfig
from model.detectors.vae_lstm.detector import VAELSTMDetector
from model.detectors.vae_lstm.network import VAELSTM

__all__ = ["VAELSTM", "VAELSTMConfig", "VAELSTMDetector"]
