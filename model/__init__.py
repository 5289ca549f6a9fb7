"""Seq2GMM numerics: cycle cutting, segmentation, the detectors, checkpoints and evaluation.

Pure numerics only (torch, numpy, scipy, pwlf, safetensors): nothing here touches Kafka,
Redis, environment variables or logging configuration. The README's "Architecture" section
maps the subpackages; ``tests/test_architecture.py`` checks the rule.
"""

__version__ = "0.1.0"
