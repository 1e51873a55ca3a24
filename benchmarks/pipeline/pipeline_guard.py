"""``siambench run`` never reuses a result made with other settings.

Every step records a *fingerprint* when it starts: its arguments and the SHA-256 of each
config file it reads (``--config-file``, a transfer task's ``configs/transfer/NAME.yaml``,
and their ``_BASE_`` chains). Before the first launch :func:`check_reuse` compares each
finished step with what it would run now:

* settings changed (an entry's OPTS, a pipeline key, an edited config file): the run is
  refused with the changed keys, e.g. ``simsiam/pretrain: SOLVER.EPOCHS 20 -> 30``;
* a finished step whose input step will run again (its output was deleted, or it is
  forced) would describe a model that no longer exists: refused as well — except after
  the synthetic dataset, which is regenerated bit-identical from the same arguments;
* ``--force STEP`` (a step key such as ``simsiam/pretrain``, an entry name, or ``all``)
  removes that step's output directory and its dependents', so they run again.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

from siambench.pretrain.utils.config import ConfigError, base_chain

from .pipeline_config import resolve_path
from .steps import Step

__all__ = ["fingerprint", "changes", "expand_force", "check_reuse", "reset_outputs", "PipelineChanged"]


class PipelineChanged(ConfigError):
    """Finished steps were made with other settings; names them and the fix."""


def _config_files(step: Step) -> list[Path]:
    """The config files a step reads, with their ``_BASE_`` chains."""
    files = [resolve_path(step.config_file)] if step.config_file else []
    if step.flags.get("--task"):
        files.append(resolve_path(f"configs/transfer/{step.flags['--task']}.yaml"))
    chain: list[Path] = []
    for root in reversed(files):
        chain += [p for p in base_chain(root) if p not in chain]
    return chain


def fingerprint(step: Step) -> dict[str, Any]:
    """What a step's result depends on: its arguments and its config files' contents."""
    return {"argv": list(step.argv),
            "files": {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in _config_files(step)}}


def _recorded_options(argv: Sequence[str]) -> dict[str, str]:
    """A recorded command line (pipeline_state.json keeps each step's argv) by option name, as
    :meth:`Step.options` names them: ``#i`` positionals, ``--flag`` values, ``KEY`` values (last wins)."""
    out: dict[str, str] = {}
    i, pos = 1, 0
    while i < len(argv):
        tok = argv[i]
        is_key = tok[:1].isupper() and tok.replace(".", "").replace("_", "").isalnum()
        if tok.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[tok], i = argv[i + 1], i + 2
        elif tok.startswith("--"):
            out[tok], i = "(set)", i + 1
        elif is_key and i + 1 < len(argv):
            out[tok], i = argv[i + 1], i + 2
        else:
            out[f"#{pos}"], i, pos = tok, i + 1, pos + 1
    return out


def changes(step: Step, recorded: dict[str, Any]) -> list[str]:
    """How ``step`` now differs from the run recorded in pipeline_state.json ([] = same, or unknown)."""
    old_argv = (recorded.get("fingerprint") or {}).get("argv")
    if old_argv is None and recorded.get("command"):
        old_argv = list(recorded["command"][1:])  # older state files: the command only
    if old_argv is None:
        return []  # produced outside this runner: nothing to compare with
    out = []
    if old_argv != step.argv:
        old, new = _recorded_options(old_argv), step.options()
        for key in dict.fromkeys([*old, *new]):
            if old.get(key) != new.get(key):
                out.append(f"{key} {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}")
        if not out:  # same options in another order
            out.append("argument order changed")
    old_files = (recorded.get("fingerprint") or {}).get("files")
    if old_files is not None:
        now = fingerprint(step)["files"]
        out += [f"{path} content changed" for path in old_files if path in now and now[path] != old_files[path]]
        out += [f"{path} no longer read" for path in old_files if path not in now]
    return out


def expand_force(tokens: Iterable[str], steps: Sequence[Step]) -> set[str]:
    """``--force`` values -> step keys: a key, an entry name (all its steps), a transfer task's key (all its
    trials' steps, when trials are steps of their own) or ``all``."""
    keys = {s.key for s in steps}
    out: set[str] = set()
    for tok in (t for item in tokens for t in item.split(",") if t):
        if tok == "all":
            out |= keys
        elif tok in keys:
            out.add(tok)
        elif any(s.entry == tok or s.key.startswith(f"{tok}/") for s in steps):
            out |= {s.key for s in steps if s.entry == tok or s.key.startswith(f"{tok}/")}
        else:
            entries = sorted({s.entry for s in steps if s.entry})
            raise ConfigError(f"--force {tok}: no such step or entry; steps are e.g. {sorted(keys)[:3]}, "
                              f"entries {entries}, or 'all'")
    return out


def _dependents(steps: Sequence[Step], roots: set[str]) -> set[str]:
    """``roots`` and every step that needs one of them, transitively."""
    closure = set(roots)
    changed = True
    while changed:
        changed = False
        for s in steps:
            if s.key not in closure and any(d in closure for d in s.deps):
                closure.add(s.key)
                changed = True
    return closure


def check_reuse(steps: Sequence[Step], recorded: dict[str, dict[str, Any]], force: set[str]) -> set[str]:
    """The step keys to rerun (forced and their dependents).

    Raises:
        PipelineChanged: finished steps whose settings changed, or whose input step will
            run again, and that ``force`` does not cover.
    """
    rerun = _dependents(steps, force)
    done = {s.key: s.done() for s in steps}
    by_key = {s.key: s for s in steps}

    def _runs_again(key: str) -> bool:
        if key in rerun:
            return True
        if done.get(key, True):
            return False
        # The data step is deterministic: regenerated with the recorded arguments, it writes the same files.
        return not (key == "synth" and recorded.get(key) and not changes(by_key[key], recorded[key]))

    problems = []
    for s in steps:
        if not done[s.key] or s.key in rerun:
            continue
        diff = changes(s, recorded.get(s.key, {}))
        if diff:
            problems.append(f"{s.key}: done with other settings: {'; '.join(diff)}")
            continue
        again = [d for d in s.deps if _runs_again(d)]
        if again:
            problems.append(f"{s.key}: done, but its input {', '.join(again)} will run again")
    if problems:
        keys = sorted({p.split(":")[0] for p in problems})
        raise PipelineChanged(
            "finished steps do not match the pipeline any more (their results are kept, nothing ran):\n  "
            + "\n  ".join(problems)
            + f"\nrerun them (and what depends on them) with --force {','.join(keys)}, "
              "or use a new OUTPUT_DIR")
    return rerun


def reset_outputs(steps: Sequence[Step], keys: set[str], root: Path, log=print) -> None:
    """Remove the output directories of the steps to rerun (only what exists, only under ``root``).

    Raises:
        ConfigError: a forced step writes outside ``root`` (e.g. a shared SYNTH.ROOT), which
            the runner does not delete; nothing has been removed then.
    """
    todo = [s for s in steps if s.key in keys and s.out_dir is not None and s.out_dir.exists()]
    base = root.resolve()
    outside = [s for s in todo if base not in s.out_dir.resolve().parents]
    if outside:
        raise ConfigError(f"--force {outside[0].key}: its output {outside[0].out_dir} is outside OUTPUT_DIR "
                          f"{root}; delete it yourself if you mean to, then run again")
    for s in todo:
        log(f"--force: removing {s.out_dir} ({s.key} runs again)")
        shutil.rmtree(s.out_dir)
