"""Unconditional sampling from the start latent: no data consistency at all.

The reference point for the guided solvers (same start, same seeds) and a cheap check that
the adaptive start alone restores anything.
"""
from __future__ import annotations

from pipeline.solvers.base import Solver


class Unconditional(Solver):
    """Plain reverse sampling; `correct` is the identity."""

    name = "unconditional"
    label = "unconditional sampling"
    restores = False
    defaults: dict = {}
