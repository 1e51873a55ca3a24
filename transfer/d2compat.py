"""The one door through which siambench imports detectron2.

Import this module before any ``detectron2`` import::

    from siambench.transfer import d2compat  # noqa: F401  (patches a pure-Python detectron2 first)
    from detectron2.config import get_cfg

On every detectron2 it fixes one behaviour, the same way pretraining's loader does:

* ``detection_utils.read_image`` clips 16-bit greyscale images (Pillow modes
  ``I;16``/``I``) at 255 when converting them to RGB/BGR (a 0..65535 ramp comes out
  99.6 % white) -> ``convert_PIL_to_numpy``, which ``read_image`` calls (so the
  ``DatasetMapper``'s ``utils.read_image`` and every ``from ... import read_image``
  binding see it), scales them to 8 bits first with
  :func:`siambench.pretrain.utils.images.to_8bit`. 8-bit images take the original path
  unchanged; ``format=None`` (raw array) and ``"L"`` (what the mapper uses for
  semantic-segmentation labels, whose values are class ids, not intensities) keep
  detectron2's behaviour.

Otherwise, on an official compiled build of detectron2 it changes nothing. On the
pure-Python v0.6 that ``make setup`` installs where GitHub is unreachable (see
``transfer/install_d2.py``) it fixes, narrowly and in one place:

* ``detectron2._C`` is missing -> a stand-in module whose every op raises
  :class:`CompiledOpsUnavailable` naming the op, so deformable conv, rotated boxes
  and the C++ COCO evaluator fail with a clear message instead of an ImportError
  at import time. torchvision supplies nms/ROIAlign, which is all R-CNN needs. Its
  build-info functions (compiler, CUDA version) answer "none", so detectron2's own
  ``collect_env_info`` / ``default_setup`` (``tools/train_net.py``) keep working.
* COCOEvaluator's default C++ fast path -> falls back to pycocotools (logged).
* Pillow >= 10 removed ``Image.LINEAR`` (used as a default argument in v0.6) ->
  alias to ``Image.BILINEAR``, which is what LINEAR always meant.
* numpy >= 1.24 removed ``np.int/np.float/np.str/np.bool`` (used by v0.6 in
  ``data/build.py`` on every training run, the VOC loader/evaluator and masks) ->
  those detectron2 modules alone see a numpy proxy that has the old aliases; numpy
  itself is not touched.
* the v0.6 VOC loader crashes on a split file with one line (``np.loadtxt``
  returns a 0-d array) -> the proxy's ``loadtxt`` returns at least 1-d.
"""
from __future__ import annotations

import functools
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
from siambench.pretrain.utils.images import HIGH_DEPTH_MODES, to_8bit

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


def _patch_high_depth_images() -> None:
    """Make ``detection_utils.read_image`` scale 16-bit greyscale images to 8 bits, not clip them.

    ``read_image`` looks ``convert_PIL_to_numpy`` up in its module at call time, so wrapping
    that one function covers ``read_image`` however it was imported.
    """
    from detectron2.data import detection_utils

    original = detection_utils.convert_PIL_to_numpy
    if getattr(original, "_siambench", False):
        return

    @functools.wraps(original)
    def convert_PIL_to_numpy(image: _Image.Image, format: str | None) -> _np.ndarray:
        if format not in (None, "L") and image.mode in HIGH_DEPTH_MODES:
            image = to_8bit(image)  # "L"; the original then converts it to RGB/BGR/YUV as usual
        return original(image, format)

    convert_PIL_to_numpy._siambench = True  # type: ignore[attr-defined]
    detection_utils.convert_PIL_to_numpy = convert_PIL_to_numpy
    _PATCHED.append("read_image scales 16-bit images to 8 bits")


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
            "detectron2 is not installed. Run `make setup`, or on a GPU cluster: "
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

    _patch_high_depth_images()
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

    if not _COMPILED:
        from detectron2.evaluation import coco_evaluation

        original_init = coco_evaluation.COCOEvaluator.__init__
        if not getattr(original_init, "_siambench", False):
            def __init__(self, *args: Any, use_fast_impl: bool = True, **kwargs: Any) -> None:
                if use_fast_impl:
                    logger.info("detectron2 has no compiled ops: COCOEvaluator uses pycocotools")
                original_init(self, *args, use_fast_impl=False, **kwargs)

            __init__._siambench = True  # type: ignore[attr-defined]
            coco_evaluation.COCOEvaluator.__init__ = __init__
            _PATCHED.append("COCOEvaluator.use_fast_impl=False")


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
