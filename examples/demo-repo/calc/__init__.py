"""A tiny calculator: the demo repository autopack works on."""

from .ops import add

__all__ = ["add"]
