"""What every figure builder shares: matplotlib imported lazily, figures made with the object
API (never ``pyplot``, so no global state), and saved or encoded reproducibly."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from model.errors import DataError, Seq2GMMError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "plots need matplotlib: pip install 'seq2gmm-worker[plots]'"
FORMATS = ("png", "svg")
DPI = 100
CMAP = "YlOrRd"


class PlotsUnavailableError(Seq2GMMError):
    """matplotlib is not installed (it comes with the ``plots`` extra)."""


def new_figure(width: float, height: float) -> Figure:
    """A new Figure, not registered with pyplot (no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailableError(INSTALL_HINT) from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def colormap_and_colors() -> tuple[Any, Any]:
    """The energy colour map and the ``matplotlib.colors`` module."""
    try:
        from matplotlib import colormaps, colors
    except ImportError:
        raise PlotsUnavailableError(INSTALL_HINT) from None
    return colormaps[CMAP], colors


def check_format(fmt: str) -> None:
    """DataError unless ``fmt`` is one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise DataError(f"unknown image format {fmt!r}: use one of {', '.join(FORMATS)}")


def figure_format(path: str | Path) -> str:
    """``"png"`` or ``"svg"`` from the file's suffix; DataError for anything else."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DataError(f"cannot tell the image format of {path}: name the file *.png or *.svg")
    return fmt


def _write(fig: Figure, target: Path | BinaryIO, fmt: str) -> None:
    # no creation date in the file: the same figure gives the same bytes
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
    fig.savefig(target, format=fmt, dpi=DPI, metadata=metadata)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix; parent folders are created)."""
    p = Path(path)
    fmt = figure_format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    _write(fig, p, fmt)
    return p


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """The encoded image of ``fig`` (``png`` or ``svg``)."""
    check_format(fmt)
    buf = io.BytesIO()
    _write(fig, buf, fmt)
    return buf.getvalue()


def as_2d(window: np.ndarray) -> np.ndarray:
    """A window as (L, F) float64; DataError for any other shape."""
    w = np.asarray(window, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    if w.ndim != 2 or w.shape[0] == 0:
        raise DataError(f"a window must have shape (L,) or (L, F) with L >= 1, got {w.shape}")
    return w


def short_number(x: float | None) -> str:
    """``x`` to four significant digits for titles and legends; "n/a" when missing."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.4g}"


def titled(head: str, label: str | None) -> str:
    """``head`` followed by `` — label`` when a label is given."""
    return head + (f" — {label}" if label else "")
