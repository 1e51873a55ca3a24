"""Errors raised by ``convert``; every message names the file and the fix.

``ConversionError`` and ``UnsafeCheckpointError`` are bad input (``UserError``: one line,
exit 2) and live with the suite's other errors in :mod:`siambench.pretrain.utils.errors`;
a failed verification is not bad input but a conversion that does not hold (exit 1).
"""
from __future__ import annotations

from siambench.pretrain.utils.errors import ConversionError, UnsafeCheckpointError

__all__ = ["ConversionError", "UnsafeCheckpointError", "VerificationError"]


class VerificationError(ConversionError):
    """Converted weights do not reproduce the source network in Detectron2."""
