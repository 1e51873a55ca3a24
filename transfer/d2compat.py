"""The one door through which siambench imports detectron2, and its only patches of it.

Import this module before any ``detectron2`` import::

    from siambench.transfer import d2compat  # noqa: F401  (patches a pure-Python detectron2 first)
    from detectron2.config import get_cfg

siambench extends detectron2 through its hooks wherever one exists: the data mapper
(``TransferTrainer.build_train_loader``/``build_test_loader``, :mod:`siambench.transfer.mapper`),
the evaluators (``build_evaluator``, :mod:`siambench.transfer.evaluation`), the evaluation
hook's results, the checkpointer. What is left here changes detectron2 modules themselves,
each because no hook reaches the code concerned, and each only where it is needed
(:func:`info` lists those applied): the pure-Python v0.6 that ``make setup`` installs
where GitHub is unreachable (see ``transfer/install_d2.py``) needs the first, any v0.6
with Pillow >= 10 or numpy >= 1.24 the others; an official compiled build with older
Pillow and numpy needs none:

* ``detectron2._C`` is missing -> a stand-in module whose every op raises
  :class:`CompiledOpsUnavailable` naming the op, so deformable conv, rotated boxes
  and the C++ COCO evaluator (``COCOEvaluator(use_fast_impl=True)``, the default of
  detectron2's own ``COCOEvaluator``; siambench's evaluator does not use it) fail with a
  clear message instead of an ImportError at import time. torchvision supplies
  nms/ROIAlign, which is all R-CNN needs. Its build-info functions (compiler, CUDA version)
  answer "none", so detectron2's own ``collect_env_info`` / ``default_setup``
  (``tools/train_net.py``) keep working. Why not a hook: detectron2 modules run
  ``from detectron2 import _C`` at import time; only a module in ``sys.modules`` answers it.
  ``torch.ops.detectron2.nms_rotated`` gets the same error (a ``torch.library`` definition).
* Pillow >= 10 removed ``Image.LINEAR`` (used as a default argument in v0.6) ->
  alias to ``Image.BILINEAR``, which is what LINEAR always meant. Why not a hook: default
  arguments are evaluated when detectron2's modules are imported.
* numpy >= 1.24 removed ``np.int/np.float/np.str/np.bool`` (used by v0.6 in
  ``data/build.py`` on every training run, the VOC loader/evaluator and masks) ->
  those detectron2 modules alone see a numpy proxy that has the old aliases; numpy
  itself is not touched. Why not a hook: the aliases are read inside detectron2's
  function bodies, through each module's global ``np``.
* the v0.6 VOC loader crashes on a split file with one line (``np.loadtxt``
  returns a 0-d array) -> the proxy's ``loadtxt`` returns at least 1-d. Why not a hook:
  the call is inside ``load_voc_instances``, which detectron2's builtin VOC names register.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
import types
import warnings
from typing import Any

import numpy as _np
from PIL import Image as _Image

from siambench.pretrain.utils.errors import UserError
from siambench.transfer import install_d2  # standard library only: the install hint

logger = logging.getLogger(__name__)

__all__ = ["CompiledOpsUnavailable", "info", "has_compiled_ops"]


class CompiledOpsUnavailable(UserError, RuntimeError, AttributeError):
    """A detectron2 feature needs compiled C++/CUDA ops that this install lacks.

    Subclasses AttributeError too, so ``hasattr(_C, name)`` stays a quiet probe.
    """


class _MissingCompiledOps(types.ModuleType):
    """Stand-in for ``detectron2._C`` in a pure-Python install.

    Its build-information functions answer truthfully ("none") instead of raising, since
    ``import detectron2._C`` succeeds here where detectron2 expects an ImportError:
    ``collect_env_info`` (run by ``default_setup``, i.e. detectron2's ``tools/train_net.py``)
    then reports "Compiler: none (...)" instead of failing.
    """

    _NONE = "none (pure-Python detectron2 without compiled ops; see `siambench doctor`)"

    def get_compiler_version(self) -> str:
        return self._NONE

    def get_cuda_version(self) -> str:
        return self._NONE

    def has_cuda(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise CompiledOpsUnavailable(_missing_op_message(name))


def _missing_op_message(name: str) -> str:
    return (
        f"detectron2._C.{name} needs detectron2's compiled ops, which this pure-Python "
        "detectron2 does not have (deformable conv, rotated boxes, C++ COCO eval). "
        "Build the official detectron2 from GitHub to use it: "
        "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
    )


def _register_missing_torch_ops() -> Any:
    """``nms_rotated`` reaches the compiled ops through ``torch.ops.detectron2``, not ``_C``:
    define that op so calling it raises the same clear error. Returns the Library (kept alive)."""
    import torch

    lib = torch.library.Library("detectron2", "DEF")
    lib.define("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor")

    def nms_rotated(boxes: Any, scores: Any, iou_threshold: float) -> Any:
        raise CompiledOpsUnavailable(_missing_op_message("nms_rotated"))

    lib.impl("nms_rotated", nms_rotated, "CompositeExplicitAutograd")
    return lib


class _NumpyWithOldAliases(types.ModuleType):
    """numpy as detectron2 v0.6 expects it: the aliases removed in numpy 1.24, and a
    ``loadtxt`` that never returns a 0-d array (one-line VOC split files)."""

    int = int
    float = float
    str = str
    bool = bool
    object = object

    def __getattr__(self, name: str) -> Any:
        return getattr(_np, name)

    @staticmethod
    def loadtxt(*args: Any, **kwargs: Any) -> _np.ndarray:
        return _np.atleast_1d(_np.loadtxt(*args, **kwargs))


# detectron2 v0.6 modules that use the removed numpy aliases or np.loadtxt.
_V06_NUMPY_MODULES = (
    "detectron2.data.build",
    "detectron2.data.datasets.pascal_voc",
    "detectron2.evaluation.pascal_voc_evaluation",
    "detectron2.evaluation.sem_seg_evaluation",
    "detectron2.structures.masks",
    "detectron2.utils.visualizer",
    "detectron2.utils.video_visualizer",
)

_COMPILED: bool = False
_PATCHED: list[str] = []
_TORCH_LIBRARY: Any = None  # keeps the stand-in torch.ops.detectron2 registration alive


def _install_source() -> str:
    try:
        dist = importlib.metadata.distribution("detectron2")
    except importlib.metadata.PackageNotFoundError:
        return "source checkout (not pip-installed)"
    installer = (dist.read_text("INSTALLER") or "").strip()
    if installer == "siambench-pure-python-sdist":
        return "PyPI sdist pb1-detectron2==0.6 (sha256-verified, pure Python)"
    direct = dist.read_text("direct_url.json") or ""
    if "github.com" in direct:
        return "official GitHub source build"
    return f"pip ({installer or 'unknown installer'})"


def _patch() -> None:
    global _COMPILED, _TORCH_LIBRARY
    if importlib.util.find_spec("detectron2") is None:
        raise ImportError(
            f"detectron2 is not installed. Run {install_d2.fix_hint()}, or on a GPU cluster: "
            "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
        )
    if not hasattr(_Image, "LINEAR"):
        _Image.LINEAR = _Image.BILINEAR  # Pillow >= 10; same filter, old name
        _PATCHED.append("PIL.Image.LINEAR")
    try:
        importlib.import_module("detectron2._C")
        _COMPILED = True
    except ImportError:
        _COMPILED = False
        sys.modules["detectron2._C"] = _MissingCompiledOps("detectron2._C")
        _TORCH_LIBRARY = _register_missing_torch_ops()
        _PATCHED.append("detectron2._C stand-in")

    import detectron2

    if detectron2.__version__.startswith("0.6") and not hasattr(_np, "int"):
        proxy = _NumpyWithOldAliases("numpy")
        patched = []
        for name in _V06_NUMPY_MODULES:
            try:
                importlib.import_module(name).np = proxy
                patched.append(name.split(".", 1)[1])
            except ModuleNotFoundError as e:  # visualizers need opencv, which we do not require
                logger.debug("not patching %s: %s", name, e)
        _PATCHED.append("numpy aliases in " + ", ".join(patched))


def has_compiled_ops() -> bool:
    return _COMPILED


def info() -> dict[str, Any]:
    """Which detectron2 is in use: version, install source, compiled ops, patches applied."""
    import detectron2

    return {
        "version": detectron2.__version__,
        "source": _install_source(),
        "path": str(getattr(detectron2, "__file__", "")),
        "compiled_ops": _COMPILED,
        "patches": list(_PATCHED),
    }


# detectron2 decorates functions with torch.jit.script in many modules at import time;
# recent torch deprecates it with a FutureWarning per import. Not actionable for users.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
# detectron2 v0.6 model_zoo imports pkg_resources (kept working by the setuptools<81 pin).
warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
_patch()
