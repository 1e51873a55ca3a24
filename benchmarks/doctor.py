"""``siambench doctor``: is this installation able to run the suite, and on what?

Prints one table: Python packages (version and where they come from), the detectron2
in use (official build or the pure-Python fallback, compiled ops, compatibility
patches), devices (CUDA, NCCL, GPU names) and the dataset roots it finds.

Exit status: 0 when every required component works, 1 otherwise, with the reasons and the
fix for this kind of installation (``make setup`` in a checkout, pip commands for a wheel).
Required: what siambench imports (torch, torchvision with its compiled ops, ...), detectron2,
and the detectron2 dependencies that transfer imports (extra ``siambench[detectron2]``).
Dataset roots are informational unless named with ``--require-datasets``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tabulate import tabulate

from siambench.pretrain.utils.paths import imagenet_root  # the rule pretraining uses for an empty DATA.ROOT
from siambench.transfer import install_d2  # standard library only: install hints, detectron2.projects

__all__ = ["Check", "DATASET_GROUPS", "PACKAGES", "Package", "collect", "fix_for", "imagenet_root", "main"]


@dataclass(frozen=True)
class Package:
    """A dependency as setup.py declares it: its distribution, the extra naming it ("" for
    install_requires), and whether doctor fails without it."""

    distribution: str
    required: bool = True
    extra: str = ""


# import name -> package, in report order
PACKAGES: dict[str, Package] = {
    "torch": Package("torch"), "torchvision": Package("torchvision"), "numpy": Package("numpy"),
    "PIL": Package("pillow"), "yaml": Package("pyyaml"), "fvcore": Package("fvcore"),
    "iopath": Package("iopath"), "pycocotools": Package("pycocotools"), "matplotlib": Package("matplotlib"),
    "tqdm": Package("tqdm"), "tabulate": Package("tabulate"),
    # detectron2's dependencies: transfer imports these (tensorboard: detectron2's event writer)
    "yacs": Package("yacs", extra="detectron2"), "termcolor": Package("termcolor", extra="detectron2"),
    "cloudpickle": Package("cloudpickle", extra="detectron2"), "omegaconf": Package("omegaconf", extra="detectron2"),
    "tensorboard": Package("tensorboard", extra="detectron2"),
    # ... and these only other parts of detectron2 (LazyConfig overrides, detectron2.model_zoo)
    "hydra": Package("hydra-core", False, "detectron2"), "pkg_resources": Package("setuptools", False, "detectron2"),
    "faster_coco_eval": Package("faster-coco-eval", False, "fast-eval"),
}
# --require-datasets choice -> detectron2 dataset names checked for it
DATASET_GROUPS: dict[str, tuple[str, ...]] = {
    "voc2007": ("voc_2007_trainval", "voc_2007_test"),
    "voc2012": ("voc_2012_trainval",),
    "coco": ("coco_2017_train", "coco_2017_val"),
    "synth": ("synth_voc_2007_trainval", "synth_voc_2007_test", "synth_voc_2012_trainval",
              "synth_coco_train", "synth_coco_val"),
}
DATASET_CHOICES = ("imagenet", *DATASET_GROUPS)


@dataclass
class Check:
    """One row of the report. ``ok`` is None for facts that cannot fail."""

    group: str
    name: str
    ok: bool | None
    detail: str
    required: bool = False

    @property
    def status(self) -> str:
        if self.ok is None:
            return "-"
        if self.ok:
            return "ok"
        return "MISSING" if self.required else "not found"


def fix_for(package: Package) -> str:
    """The command that installs ``package`` for this kind of installation."""
    if install_d2.in_checkout():
        return "`make setup`"
    if package.extra:
        return f"`pip install 'siambench[{package.extra}]'`"
    return f"`pip install {package.distribution}`"


def _version_and_path(module: object, distribution: str) -> str:
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    path = Path(getattr(module, "__file__", "") or "?").parent
    return f"{version}  ({path})"


def _packages() -> list[Check]:
    rows = []
    for name, package in PACKAGES.items():
        try:
            with warnings.catch_warnings():  # deprecation notices on import (pkg_resources) are not findings
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception as e:  # ImportError, or a broken install raising anything
            rows.append(Check("packages", name, False, f"cannot import: {type(e).__name__}: {e}. "
                              f"Fix: {fix_for(package)}", package.required))
            continue
        detail = _version_and_path(module, package.distribution)
        ok = True
        if name == "torchvision":  # detectron2 needs torchvision's compiled nms / ROIAlign
            try:
                import torch

                module.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
            except Exception as e:
                ok, detail = False, f"{detail}; compiled ops broken: {e}"
        rows.append(Check("packages", name, ok, detail, package.required))
    return rows


def _detectron2_fix(error: Exception) -> str:
    """A missing dependency's own fix when detectron2 is there but cannot import it; else install_d2's."""
    missing = getattr(error, "name", None) if isinstance(error, ImportError) else None
    if missing and missing.split(".")[0] in PACKAGES:
        return fix_for(PACKAGES[missing.split(".")[0]])
    return install_d2.fix_hint()


def _detectron2() -> list[Check]:
    try:
        d2compat = importlib.import_module("siambench.transfer.d2compat")
        info = d2compat.info()
    except Exception as e:
        fix = _detectron2_fix(e)
        detail = f"{type(e).__name__}: {e}" + ("" if fix in str(e) else f". Fix: {fix}")
        return [Check("detectron2", "detectron2", False, detail, True)]
    compiled = ("yes" if info["compiled_ops"] else
                "no (pure Python: deformable conv, rotated boxes and C++ COCO eval unavailable; R-CNN C4/FPN work)")
    return [
        Check("detectron2", "detectron2", True, f"{info['version']}  ({Path(info['path']).parent})", True),
        Check("detectron2", "source", None, info["source"]),
        Check("detectron2", "compiled ops", None, compiled),
        Check("detectron2", "compat patches", None, ", ".join(info["patches"]) or "none"),
        _detectron2_projects(),
    ]


def _detectron2_projects() -> Check:
    """detectron2's setup.py installs PointRend, DeepLab, Panoptic-DeepLab as detectron2.projects.*"""
    found = [p for p in install_d2.PROJECTS if importlib.util.find_spec(f"detectron2.projects.{p}") is not None]
    if len(found) == len(install_d2.PROJECTS):
        return Check("detectron2", "projects", None, "detectron2.projects." + ", ".join(found))
    missing = ", ".join(p for p in install_d2.PROJECTS if p not in found)
    return Check("detectron2", "projects", None,
                 f"not installed: {missing} (detectron2.projects; siambench does not use them). To add them, "
                 "reinstall detectron2: `pip uninstall detectron2 && python -m siambench.transfer.install_d2`")


def _devices() -> list[Check]:
    try:
        import torch
        import torch.distributed as dist
    except Exception as e:
        return [Check("devices", "torch", False, f"cannot import torch: {e}")]
    rows = [Check("devices", "python", None, f"{platform.python_version()} ({sys.executable})")]
    cuda = torch.cuda.is_available()
    rows.append(Check("devices", "CUDA", None,
                      f"available, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if cuda
                      else f"not available (torch built with CUDA {torch.version.cuda}); runs on CPU"))
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        rows.append(Check("devices", f"GPU {i}", None,
                          f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}"))
    nccl = dist.is_available() and dist.is_nccl_available()  # compiled into torch, not "usable here"
    if not nccl:
        detail = "not available (multi-GPU training needs it; gloo is CPU-only)"
    elif not cuda:
        detail = "built into torch, unusable here (needs CUDA GPUs); CPU runs use gloo"
    else:
        detail = "available"
        try:
            detail += " " + ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # version probing is best effort
            pass
    rows.append(Check("devices", "NCCL", None, detail))
    rows.append(Check("devices", "gloo", None, "available" if dist.is_available() and dist.is_gloo_available()
                      else "not available"))
    return rows


def _imagenet(required: bool) -> Check:
    root = imagenet_root()
    missing = [s for s in ("train", "val") if not (root / s).is_dir() or not any((root / s).iterdir())]
    if missing:
        return Check("datasets", "imagenet", False,
                     f"{root}: no {'/'.join(missing)}/<class>/*.JPEG (set $SIAMBENCH_IMAGENET)", required)
    return Check("datasets", "imagenet", True, f"{root} (ImageFolder train/ val/)", required)


def _datasets(required: set[str]) -> list[Check]:
    d2_root = os.environ.get("DETECTRON2_DATASETS")
    rows = [Check("datasets", "DETECTRON2_DATASETS", None, d2_root or "unset (detectron2 reads ./datasets)"),
            _imagenet("imagenet" in required)]
    try:
        datasets = importlib.import_module("siambench.transfer.datasets")
        datasets.register_datasets()
    except Exception as e:
        return rows + [Check("datasets", group, False, f"not checked: detectron2 unavailable ({type(e).__name__})",
                             group in required) for group in DATASET_GROUPS]
    for group, names in DATASET_GROUPS.items():
        status = datasets.dataset_status(names)
        problems = list(dict.fromkeys(p for _, _, p in status if p))  # unique, in order
        roots = sorted({root for _, root, _ in status})
        common = Path(os.path.commonpath(roots)) if problems and all(roots) else None
        if common is not None and common != Path(".") and not common.is_dir():
            problems = [f"directory {common} does not exist"]  # once, not once per split
        detail = "; ".join(problems) if problems else ", ".join(roots)
        rows.append(Check("datasets", group, not problems, detail, group in required))
    return rows


def collect(require_datasets: set[str] = frozenset()) -> list[Check]:  # type: ignore[assignment]
    """Every check, in report order."""
    return _packages() + _detectron2() + _devices() + _datasets(set(require_datasets))


def _print_table(rows: list[Check], out: Callable[[str], None]) -> None:
    table = [(r.group, r.name, r.status, r.detail) for r in rows]
    out(tabulate(table, headers=("group", "component", "status", "detail"), tablefmt="simple",
                 maxcolwidths=[None, None, None, 100]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siambench doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="print only failures and the verdict")
    parser.add_argument("--require-datasets", nargs="+", default=[], choices=DATASET_CHOICES, metavar="NAME",
                        help=f"fail unless these dataset roots are found: {', '.join(DATASET_CHOICES)}")
    args = parser.parse_args(argv)

    rows = collect(set(args.require_datasets))
    failures = [r for r in rows if r.required and not r.ok]
    if not args.quiet:
        _print_table(rows, print)
        print()
    if failures:
        print("siambench doctor: FAILED", file=sys.stderr)
        for r in failures:
            print(f"  {r.name}: {r.detail}", file=sys.stderr)
        return 1
    d2 = next(r for r in rows if r.name == "detectron2")
    print(f"siambench doctor: ok (detectron2 {d2.detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
