"""Bad input: one class, one line, exit code 2.

Every error that describes bad input -- a config key, a file or directory that is missing
or malformed, a checkpoint that cannot be read -- derives from :class:`UserError`, and its
message names the file/key and the fix. ``siambench`` (``benchmarks/cli.py``) and the
commands' own entry points (:func:`exit_2_on_user_error`) print that message as one line
and return 2, instead of a traceback; ``SIAMBENCH_DEBUG=1`` shows the traceback. Anything
else is a bug and keeps its traceback.

This module imports nothing heavy: the CLI imports it before any command runs.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Sequence

__all__ = ["UserError", "ConfigError", "CheckpointError", "MissingFileError", "ConversionError",
           "UnsafeCheckpointError", "USER_ERROR_EXIT", "report_user_error", "exit_2_on_user_error"]

USER_ERROR_EXIT = 2  # argparse's code for bad arguments: siambench uses it for all bad input


class UserError(Exception):
    """Bad input; the message names the file or key and the fix, in one line."""


class ConfigError(UserError, ValueError):
    """A config file or override is wrong; the message names the file/key and the fix."""


class CheckpointError(ConfigError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file named on the command line or in a config does not exist."""


class ConversionError(UserError, ValueError):
    """A checkpoint cannot be turned into Detectron2 weights as asked."""


class UnsafeCheckpointError(CheckpointError, ConversionError):
    """Reading the file would need arbitrary unpickling, i.e. could run code hidden in it."""


def report_user_error(prog: str, exc: BaseException) -> int | None:
    """Print ``prog: error: <message>`` and return 2 for a :class:`UserError`, else None.

    Returns None as well under ``SIAMBENCH_DEBUG`` (the caller re-raises: the traceback shows).
    """
    if not isinstance(exc, UserError) or os.environ.get("SIAMBENCH_DEBUG"):
        return None
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return USER_ERROR_EXIT


MainFn = Callable[[Sequence[str] | None], int]


def exit_2_on_user_error(prog: str) -> Callable[[MainFn], MainFn]:
    """Decorate a command's ``main(argv) -> int``: a :class:`UserError` becomes one line and 2.

    The same rule as ``siambench COMMAND``, for entry points that bypass the dispatcher
    (``python -m``, torchrun, tests calling ``main`` directly).
    """
    def decorate(main: MainFn) -> MainFn:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except UserError as e:
                rc = report_user_error(prog, e)
                if rc is None:
                    raise
                return rc
        return wrapper
    return decorate
