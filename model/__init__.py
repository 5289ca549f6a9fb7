"""Seq2GMM numerics: segmentation, networks, training, scoring and checkpoints.

Pure numerics only (torch, numpy, pwlf): nothing here touches Kafka, Redis, environment
variables or logging configuration.
"""

__version__ = "0.1.0"
