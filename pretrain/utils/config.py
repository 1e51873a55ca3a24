"""One configuration language for the suite: detectron2-style yacs YAML.

Every command that runs something takes ``--config-file FILE`` (with ``_BASE_``
inheritance) and trailing ``KEY VALUE`` overrides, exactly like detectron2's
``train_net.py``, writes under ``OUTPUT_DIR`` and saves the resolved config there.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from fvcore.common.config import CfgNode

from .io import atomic_write_text
from .paths import resolve

__all__ = ["CfgNode", "add_config_args", "load_config", "merge_overrides", "save_config", "ConfigError"]


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file/key and the fix."""


def add_config_args(parser: argparse.ArgumentParser, example: str = "OUTPUT_DIR runs/x",
                    required: bool = False) -> argparse.ArgumentParser:
    """``--config-file FILE`` and trailing ``KEY VALUE`` overrides, as detectron2's ``train_net.py``.

    The config file is optional for every command (without it the command's defaults, the
    paper's recipe, apply); ``example`` is shown in ``--help`` and must be valid overrides of
    that command (a test runs every help example).
    """
    parser.add_argument("--config-file", metavar="FILE", required=required,
                        help="yacs YAML config (_BASE_ inheritance; configs/... also from an installed wheel); "
                             "default: the built-in defaults")
    parser.add_argument(
        "opts",
        metavar="KEY VALUE",
        nargs=argparse.REMAINDER,
        default=[],
        help=f"config overrides, e.g. {example}",
    )
    return parser


def load_config(defaults: CfgNode, config_file: str | os.PathLike | None, opts: Sequence[str] = ()) -> CfgNode:
    """Return a frozen copy of ``defaults`` merged with ``config_file`` and ``opts``.

    Raises:
        ConfigError: missing file, unknown key or malformed override, naming the culprit.
    """
    cfg = defaults.clone()
    cfg.set_new_allowed(False)
    if config_file is not None:
        path = resolve(config_file)  # as given, else the shipped configs/ (also from a wheel)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (configs live under configs/)")
        try:
            cfg.merge_from_file(str(path))
        except KeyError as e:
            raise ConfigError(f"{path}: unknown config key {e}; check the spelling against the defaults") from e
        except Exception as e:  # yaml errors, type mismatches
            raise ConfigError(f"{path}: {e}") from e
    merge_overrides(cfg, opts)
    cfg.freeze()
    return cfg


def merge_overrides(cfg: CfgNode, opts: Sequence[str]) -> None:
    """Merge trailing ``KEY VALUE`` pairs (as detectron2's ``train_net.py``) into ``cfg``.

    Raises:
        ConfigError: an odd number of items, or a key the config does not have.
    """
    opts = list(opts)
    if opts and opts[0] == "--":
        opts = opts[1:]
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number: {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"bad override {opts}: {e}") from e


def save_config(cfg: CfgNode, output_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config to ``output_dir/name`` atomically and return its path."""
    path = Path(output_dir) / name
    atomic_write_text(path, cfg.dump())
    return path
