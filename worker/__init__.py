"""seq2gmm-worker: everything that touches the outside world.

Settings, the Kafka consumer/producer loop, the Redis model registry, the CLI, logging
setup, metrics and the embedded development services. The numerics live in :mod:`model`.
"""

from model import __version__

__all__ = ["__version__"]
