"""Subcommands of ``seq2gmm``; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from worker.commands import backtest, dev, models, plot, routes, run, stream_io, train

Register = Callable[["argparse._SubParsersAction[Any]"], None]

COMMANDS: list[Register] = [
    dev.register,
    train.register,
    models.register,
    routes.register,
    run.register,
    stream_io.register,
    plot.register,
    backtest.register,
]
