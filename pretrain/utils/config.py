"""One configuration language for the suite: detectron2-style yacs YAML.

Every command that runs something takes ``--config-file FILE`` (with ``_BASE_``
inheritance) and trailing ``KEY VALUE`` overrides, exactly like detectron2's
``train_net.py``, writes under ``OUTPUT_DIR`` and saves the resolved config there.

Also the suite's one reading of a config as data: :func:`flatten` (dotted keys),
:func:`config_diff` (``KEY: old -> new``), :func:`base_chain` (a file and its ``_BASE_``
files) and :func:`load_yaml_chain` (the chain merged, without the defaults).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fvcore.common.config import CfgNode

from .errors import ConfigError
from .io import atomic_write_text
from .paths import resolve

__all__ = ["CfgNode", "add_config_args", "load_config", "merge_overrides", "save_config", "ConfigError",
           "flatten", "matches", "config_diff", "base_chain", "load_yaml_chain"]

ABSENT = "<absent>"  # how config_diff shows a key one side lacks


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
        ConfigError: missing file, a ``_BASE_`` loop, unknown key or malformed override, naming the culprit.
    """
    cfg = defaults.clone()
    cfg.set_new_allowed(False)
    if config_file is not None:
        path = resolve(config_file)  # as given, else the shipped configs/ (also from a wheel)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (configs live under configs/)")
        base_chain(path)  # a _BASE_ loop: one line, not fvcore's endless recursion
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


def plain(value: Any) -> Any:
    """Tuples as lists: a config compares equal to itself once it went through YAML (lists only)."""
    return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"SOLVER.BASE_LR": 0.05, ...}``: every leaf of a nested mapping (a CfgNode, or a YAML
    file read as dicts) under its dotted key; tuples become lists."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = plain(value)
    return flat


def matches(key: str, patterns: Sequence[str]) -> bool:
    """``key`` is one of ``patterns``, or lies under one ending in "." (``"MONITOR."``)."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Sequence[str] = (),
                old_keys_only: bool = False) -> list[str]:
    """``KEY: old -> new`` (sorted) for every dotted key whose value differs.

    ``old``/``new`` are nested (flattened here) or already flat. Keys matched by ``ignore``
    (see :func:`matches`) are skipped; with ``old_keys_only`` a key ``old`` lacks is no
    difference (a newer siambench added it with its default).
    """
    a, b = flatten(old), flatten(new)
    keys = sorted(a) if old_keys_only else sorted(set(a) | set(b))
    return [f"{k}: {a.get(k, ABSENT)!r} -> {b.get(k, ABSENT)!r}" for k in keys
            if a.get(k, ABSENT) != b.get(k, ABSENT) and not matches(k, ignore)]


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else {} if data is None else None


def base_chain(path: str | os.PathLike) -> list[Path]:
    """``path`` and the files its ``_BASE_`` names, transitively, ``path`` first.

    A ``_BASE_`` is relative to the file that names it, as fvcore resolves it (and kept as
    fvcore joins it: ``dir/../base.yaml``, not normalised). The walk ends
    before a file that does not exist and after one that does not parse (:func:`load_config`
    reports those); ``[]`` if ``path`` does not exist.

    Raises:
        ConfigError: the chain comes back to a file it already walked (it would never end).
    """
    chain: list[Path] = []
    seen: list[Path] = []  # the same files, resolved: "a/../b.yaml" is "b.yaml"
    current: Path | None = Path(path)
    while current is not None and current.is_file():
        if current.resolve() in seen:
            start = seen.index(current.resolve())
            loop = " -> ".join(str(p) for p in [*chain[start:], current])
            raise ConfigError(f"{chain[0]}: the _BASE_ chain loops ({loop}); make one of them name no _BASE_")
        chain.append(current)
        seen.append(current.resolve())
        base = (_read_yaml(current) or {}).get("_BASE_")
        current = current.parent / base if isinstance(base, str) else None
    return chain


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_yaml_chain(path: str | os.PathLike) -> dict[str, Any]:
    """A yacs YAML file merged over its ``_BASE_`` chain, as plain dicts (no defaults; ``{}`` if
    it cannot be read). A lenient reader for estimates and checks, not a config loader.

    Raises:
        ConfigError: the ``_BASE_`` chain loops.
    """
    merged: dict[str, Any] = {}
    for file in reversed(base_chain(path)):
        data = dict(_read_yaml(file) or {})
        data.pop("_BASE_", None)
        merged = _merge(merged, data)
    return merged
