"""Subcommands of ``seq2gmm``; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from worker.commands import (
    backtest,
    compare,
    dev,
    drift,
    models,
    plot,
    retrain,
    routes,
    run,
    stream_io,
    train,
)

Register = Callable[["argparse._SubParsersAction[Any]"], None]


def _models(sub: argparse._SubParsersAction[Any]) -> None:
    """``seq2gmm models``, with the actions that judge models on live traffic."""
    actions = models.register(sub)
    compare.register(actions)
    drift.register(actions)


COMMANDS: list[Register] = [
    dev.register,
    train.register,
    _models,
    routes.register,
    run.register,
    stream_io.register,
    plot.register,
    backtest.register,
    retrain.register,
]
