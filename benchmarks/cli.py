"""``siambench``: one command, one subcommand per step of the pipeline.

Each subcommand lives in its own module with a ``main(argv) -> int``; this file only
dispatches, importing the module lazily so ``siambench doctor`` works even when
detectron2 is broken.
"""
from __future__ import annotations

import errno
import importlib
import os
import sys

from siambench.pretrain.utils.errors import USER_ERROR_EXIT, UserError

# subcommand -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("siambench.benchmarks.doctor", "check the installation, devices and datasets"),
    "data": ("siambench.transfer.synth", "write the built-in synthetic dataset (`siambench data synth --out DIR`)"),
    "pretrain": ("siambench.pretrain.main", "SimSiam pretraining (torchrun for multi-GPU)"),
    "supervised": ("siambench.pretrain.supervised", "supervised baseline pretraining on ImageFolder labels"),
    "lincls": ("siambench.pretrain.lincls", "linear evaluation of a pretrained encoder"),
    "knn": ("siambench.pretrain.knn", "weighted kNN evaluation of a pretrained encoder"),
    "convert": ("siambench.convert.cli", "checkpoint -> Detectron2 weights (.pkl)"),
    "transfer": ("siambench.transfer.main", "Detectron2 fine-tuning on VOC / COCO"),
    "run": ("siambench.benchmarks.pipeline.pipeline", "the whole pipeline from one PIPELINE.yaml (resumable)"),
    "status": ("siambench.benchmarks.pipeline.status", "each step of a run OUTPUT_DIR: state, job, node, log"),
    "cancel": ("siambench.benchmarks.pipeline.cancel", "cancel the SLURM jobs of a `siambench run` OUTPUT_DIR"),
    "table": ("siambench.benchmarks.report.table", "transfer / linear-eval tables from a runs directory"),
    "report": ("siambench.benchmarks.report.report", "Markdown + HTML report of a runs directory"),
}


# Disk/permission errors the user fixes outside siambench, with the fix; also found as the
# cause of another exception (torch.save wraps ENOSPC in a RuntimeError, for instance).
_OS_ERRORS = {
    errno.EACCES: "no permission; choose a writable OUTPUT_DIR (or fix the permissions)",
    errno.EPERM: "not permitted; choose a writable OUTPUT_DIR (or fix the permissions)",
    errno.EROFS: "read-only file system; choose an OUTPUT_DIR on a writable disk",
    errno.ENOSPC: "no space left on the device; free space or choose an OUTPUT_DIR on another disk",
    errno.EDQUOT: "disk quota exceeded; free space or choose an OUTPUT_DIR on another disk",
}


def _os_error_line(exc: BaseException) -> str | None:
    """One line for a permission / read-only / full-disk error anywhere in ``exc``'s chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
            where = f" {exc.filename}" if exc.filename else ""
            return f"{exc.strerror or os.strerror(exc.errno)}:{where} ({_OS_ERRORS[exc.errno]})"
        exc = exc.__cause__ or exc.__context__
    return None


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: siambench COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `siambench COMMAND --help` for a command's options, `siambench --version` for the version."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from siambench.pretrain.utils.env import siambench_version

        print(f"siambench {siambench_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"siambench: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        rc = module.main(rest)
    except Exception as e:  # bad input (UserError) or a disk/permission error: one line, exit 2
        line = str(e) if isinstance(e, UserError) else _os_error_line(e)
        if line is None or os.environ.get("SIAMBENCH_DEBUG"):
            raise
        print(f"siambench {name}: error: {line}", file=sys.stderr)
        return USER_ERROR_EXIT
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
