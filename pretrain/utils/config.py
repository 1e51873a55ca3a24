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
from .paths import CONFIG_ROOT, resolve

__all__ = ["CfgNode", "add_config_args", "load_config", "merge_overrides", "save_config", "ConfigError",
           "flatten", "matches", "config_diff", "base_chain", "base_files", "load_yaml_chain",
           "read_config_yaml", "read_config_chain"]

ABSENT = "<absent>"  # how config_diff shows a key one side lacks


def add_config_args(parser: argparse.ArgumentParser, example: str = "OUTPUT_DIR runs/x",
                    required: bool = False) -> argparse.ArgumentParser:
    """``--config-file FILE`` and trailing ``KEY VALUE`` overrides, as detectron2's ``train_net.py``.

    Commands parse with ``parse_intermixed_args``, so their flags may also follow the overrides
    (``OUTPUT_DIR x --resume auto``).

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
        nargs="*",  # flags may come after them: parse with parse_intermixed_args
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
        loaded = read_config_chain(path)  # one line for a loop, an empty/list/bad file, a missing _BASE_
        try:
            cfg.merge_from_other_cfg(type(cfg)(loaded))
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
    """A YAML mapping, ``{}`` for an empty file, None if it cannot be read or is no mapping."""
    try:
        return read_config_yaml(path, empty_ok=True)
    except ConfigError:
        return None


def read_config_yaml(path: Path, empty_ok: bool = False) -> dict[str, Any]:
    """The mapping a yacs YAML file holds, as fvcore reads it (``{}`` for an empty file if ``empty_ok``).

    Raises:
        ConfigError: the file cannot be read, is not YAML, is empty, or holds something other than a mapping.
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e}); "
                          "check the path and its permissions") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line} ({getattr(e, 'problem', None) or e}); "
                          "fix the syntax (KEY: value lines)") from None
    if data is None and not empty_ok:
        raise ConfigError(f"{path}: the config file is empty; write KEY: value lines (e.g. SEED: 1, or "
                          "_BASE_: FILE), or leave out the file to use the defaults")
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the file holds a YAML {type(data).__name__}, not a mapping; write "
                          "KEY: value lines (e.g. SEED: 1, nested keys indented under SOLVER:), "
                          "optionally with _BASE_: FILE")
    return data or {}


def _shipped_base(name: str, named_in: Path) -> Path | None:
    """The shipped config a ``_BASE_`` means when it is not next to the file naming it.

    Tried in order: ``configs/...`` as ``--config-file`` resolves it (inside the shipped tree); the
    same place inside the shipped tree when ``named_in`` lies under a ``configs/`` folder (a copy
    of ``configs/transfer/x.yaml`` keeps ``_BASE_: Base-...yaml``); the one shipped folder that
    holds ``name``.
    """
    given = Path(name).parts
    if given and given[0] == "configs" and CONFIG_ROOT.joinpath(*given[1:]).is_file():
        return CONFIG_ROOT.joinpath(*given[1:])
    parts = named_in.parent.parts
    if "configs" in parts:
        mirrored = CONFIG_ROOT.joinpath(*parts[len(parts) - parts[::-1].index("configs"):], name)
        if mirrored.is_file():
            return mirrored
    folders = [CONFIG_ROOT, *sorted(p for p in CONFIG_ROOT.rglob("*") if p.is_dir())]
    hits = {(d / name).resolve(): d / name for d in folders if (d / name).is_file()}
    return next(iter(hits.values())) if len(hits) == 1 else None


def base_files(path: Path, data: dict[str, Any]) -> list[tuple[str, Path]]:
    """``(as written, file)`` for each ``_BASE_`` of ``path`` (a name or a list of names, as fvcore
    allows): relative to ``path`` (as fvcore joins it), else the shipped config (:func:`_shipped_base`);
    a base found nowhere is given where fvcore would look."""
    base = data.get("_BASE_")
    names = [base] if isinstance(base, str) else [b for b in base if isinstance(b, str)] if isinstance(base, list) else []
    out = []
    for name in names:
        given = Path(name).expanduser()
        near = given if given.is_absolute() else path.parent / given
        out.append((name, near if near.is_file() else _shipped_base(name, path) or near))
    return out


def _walk(path: Path, ancestors: list[Path], strict: bool) -> list[tuple[Path, dict[str, Any]]]:
    """``path`` first, then its bases' chains (the last base first: merging the reversed list
    gives fvcore's order); loops raise, a missing or unreadable base ends the walk unless ``strict``."""
    if any(path.resolve() == a.resolve() for a in ancestors):
        start = next(i for i, a in enumerate(ancestors) if a.resolve() == path.resolve())
        loop = " -> ".join(str(p) for p in [*ancestors[start:], path])
        raise ConfigError(f"{ancestors[0]}: the _BASE_ chain loops ({loop}); make one of them name no _BASE_")
    if strict:
        data = read_config_yaml(path)
    else:
        data = _read_yaml(path) if path.is_file() else None
        if data is None:
            return [(path, {})] if path.is_file() else []
    chain = [(path, data)]
    for name, base in reversed(base_files(path, data)):
        if strict and not base.is_file():
            raise ConfigError(f"{path}: _BASE_ {name} not found (neither {base} nor a shipped config under "
                              f"{CONFIG_ROOT}); fix the _BASE_ path")
        chain += _walk(base, [*ancestors, path], strict)
    return chain


def base_chain(path: str | os.PathLike) -> list[Path]:
    """``path`` and the files its ``_BASE_`` names, transitively, ``path`` first.

    A ``_BASE_`` is relative to the file that names it, as fvcore resolves it (and kept as
    fvcore joins it: ``dir/../base.yaml``, not normalised); one not found there is the shipped
    config of that name (:func:`base_files`). The walk ends before a file that does not exist
    and after one that does not parse (:func:`load_config` reports those); ``[]`` if ``path``
    does not exist.

    Raises:
        ConfigError: the chain comes back to a file it already walked (it would never end).
    """
    return [p for p, _ in _walk(Path(path), [], strict=False)]


def read_config_chain(path: str | os.PathLike) -> dict[str, Any]:
    """A yacs YAML file merged over its ``_BASE_`` chain as fvcore merges it (plain dicts).

    Raises:
        ConfigError: a file of the chain is missing, unreadable, empty or not a mapping, or the chain loops;
            the message names the file and the fix.
    """
    merged: dict[str, Any] = {}
    for _, data in reversed(_walk(Path(path), [], strict=True)):
        data = dict(data)
        data.pop("_BASE_", None)
        merged = _merge(merged, data)
    return merged


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
