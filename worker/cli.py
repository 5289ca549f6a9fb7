"""The ``seq2gmm`` command line.

Each subcommand lives in :mod:`worker.commands` and registers itself on the parser. Settings
come from the environment (``SEQ2GMM_*``); logging is configured here, once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from model.errors import Seq2GMMError
from worker import __version__
from worker.commands import COMMANDS
from worker.errors import ConfigError
from worker.ops.log import configure_logging
from worker.ops.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seq2gmm",
        description="Streaming anomaly detection for quasi-periodic time series (Seq2GMM).",
        epilog="Settings come from SEQ2GMM_* environment variables; see the README.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"seq2gmm: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.logging.format, settings.logging.level)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    try:
        return int(args.handler(args, settings) or 0)
    except Seq2GMMError as exc:
        print(f"seq2gmm: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `seq2gmm tail | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("seq2gmm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
