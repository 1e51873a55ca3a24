"""Errors raised by ``convert``; every message names the file and the fix."""
from __future__ import annotations

__all__ = ["ConversionError", "UnsafeCheckpointError", "VerificationError"]


class ConversionError(ValueError):
    """A checkpoint cannot be turned into Detectron2 weights as asked."""


class UnsafeCheckpointError(ConversionError):
    """Reading the file would need arbitrary unpickling, i.e. could run code hidden in it."""


class VerificationError(ConversionError):
    """Converted weights do not reproduce the source network in Detectron2."""
