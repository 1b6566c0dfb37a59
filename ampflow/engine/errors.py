"""Errors raised by the engine.

Every error names the parameter, the value it got and what was expected, for example
``site 'depot': import_kw must be >= 0, got -5``.
"""

from __future__ import annotations

__all__ = ["AmpflowError", "ProblemError", "TopologyError"]


class AmpflowError(ValueError):
    """Base class of every error Ampflow raises for bad input."""


class TopologyError(AmpflowError):
    """A site's capacity tree is invalid (cycle, unknown parent, bad limit, missing phase)."""


class ProblemError(AmpflowError):
    """An allocation or scheduling problem is malformed (wrong shape, negative energy, ...)."""
