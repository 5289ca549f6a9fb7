"""Figures that show what a model flagged and why (matplotlib, in the optional ``plots`` extra)."""

from model.evaluation.plots.window import *  # noqa: F403
from model.evaluation.plots.window import ProgressFactory, _scale_for  # noqa: F401
