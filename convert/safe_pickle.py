"""Read Detectron2 ``.pkl`` weights without letting the file run code.

Detectron2 reads ``.pkl`` weights with plain ``pickle.load``: a crafted file can
execute anything while "loading weights". :func:`load_weights_pkl` instead uses an
unpickler that resolves only the globals needed to rebuild numpy arrays and
refuses every other one -- before calling it. What it admits:

* containers and scalars the pickle machine builds without globals: dict, list,
  tuple, str, bytes, int, float, bool, None; ``collections.OrderedDict``;
* numpy arrays and scalars through numpy's own reconstructors (``_reconstruct``,
  ``_frombuffer``, ``scalar``, ``dtype``), wrapped so that an object dtype --
  an array whose elements are arbitrary Python objects -- is refused;
* ``_codecs.encode(text, "latin1")``, which is how Python 3 writes ``bytes`` in
  protocol-2 pickles (detectron2's model-zoo files are such pickles).

:class:`SafeDetectionCheckpointer` is Detectron2's ``DetectionCheckpointer`` with
its ``.pkl`` branch routed through :func:`load_weights_pkl`; the transfer step uses
it. It is built lazily so ``convert`` imports without detectron2.
"""
from __future__ import annotations

import _codecs
import collections
import io
import os
import pickle
from typing import Any, Callable

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

from .errors import UnsafeCheckpointError

__all__ = ["load_weights_pkl", "safe_loads", "SafeDetectionCheckpointer"]


def _safe_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:  # elements would be arbitrary Python objects
        raise pickle.UnpicklingError(f"object dtype {dtype!r} refused")
    return dtype


class _Token:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Stands for ``numpy.ndarray`` in a pickle: good as ``_reconstruct``'s subtype, not callable.
_NDARRAY = _Token("numpy.ndarray")


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"array subtype {subtype!r} refused")
    _safe_dtype(typecode)
    return _multiarray._reconstruct(np.ndarray, shape, typecode)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _numeric._frombuffer(buf, _safe_dtype(dtype), shape, order)


def _safe_scalar(dtype: Any, *args: Any) -> Any:
    return _multiarray.scalar(_safe_dtype(dtype), *args)


def _latin1_encode(text: str, encoding: str = "utf-8", *args: Any) -> bytes:
    if encoding not in ("latin1", "latin-1") or args:
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} refused")
    return _codecs.encode(text, encoding)


# (module, name) as written in the pickle -> the object it stands for. numpy 1.x
# pickles say "numpy.core", numpy 2.x "numpy._core": both map to the same wrappers.
_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _safe_reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _safe_scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _safe_frombuffer

_PLAIN = (str, bytes, int, float, bool, type(None), np.generic)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a weights file"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a weights file")


def _check_plain(obj: Any, where: str = "", depth: int = 0) -> None:
    """Second line of defence: the result holds only the admitted types."""
    if depth > 32:
        raise pickle.UnpicklingError(f"nesting deeper than 32 levels at {where or 'top level'}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where, depth + 1)
            _check_plain(v, f"{where}/{k}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]", depth + 1)
    elif isinstance(obj, np.ndarray):
        if type(obj) is not np.ndarray or obj.dtype.hasobject:
            raise pickle.UnpicklingError(f"array at {where} has object dtype or a subclass")
    elif not isinstance(obj, _PLAIN):
        raise pickle.UnpicklingError(f"{type(obj).__name__} at {where} is not a plain type")


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only plain types and numpy arrays (see module doc).

    Raises:
        UnsafeCheckpointError: the pickle references anything else or is malformed.
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
        _check_plain(obj)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # UnpicklingError, and whatever a malformed stream raises
        raise UnsafeCheckpointError(
            f"{source}: refused: not a plain weights pickle ({e}). Weights files may hold only "
            "dicts, lists, strings, numbers and numpy arrays; re-create this file with "
            "`siambench convert` from its checkpoint"
        ) from e
    return obj


def load_weights_pkl(path: str | os.PathLike) -> Any:
    """Read a Detectron2 ``.pkl`` weights file through the restricted unpickler.

    Raises:
        UnsafeCheckpointError: the file holds anything but plain types and numpy arrays.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise UnsafeCheckpointError(f"{path}: the weights file is empty; re-create it with `siambench convert`")
    return safe_loads(data, str(path))


def _build_safe_checkpointer() -> type:
    from siambench.transfer import d2compat  # noqa: F401  (must precede any detectron2 import)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.file_io import PathManager

    class SafeDetectionCheckpointer(DetectionCheckpointer):
        """``DetectionCheckpointer`` whose ``.pkl`` files go through :func:`load_weights_pkl`.

        Same results as detectron2's loader for model-zoo and ``siambench convert``
        files; a ``.pkl`` that needs arbitrary unpickling raises
        :class:`~convert.errors.UnsafeCheckpointError` instead of running.
        ``.pth`` files go to fvcore, which uses ``torch.load`` (weights_only by default).
        """

        def _load_file(self, filename: str) -> dict[str, Any]:
            if not filename.endswith(".pkl"):
                return super()._load_file(filename)
            data = load_weights_pkl(PathManager.get_local_path(filename))
            if not isinstance(data, dict):
                raise UnsafeCheckpointError(f"{filename}: holds a {type(data).__name__}, not a weights dict")
            if "model" in data and "__author__" in data:  # detectron2 model-zoo layout
                self.logger.info("Reading a file from '%s'", data["__author__"])
                return data
            # Caffe2 / Detectron1 layout, as detectron2 itself interprets it.
            blobs = data.get("blobs", data)
            blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}

    return SafeDetectionCheckpointer


_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # PEP 562: build the detectron2 subclass on first use only.
    if name == "SafeDetectionCheckpointer":
        if name not in _LAZY:
            _LAZY[name] = _build_safe_checkpointer()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
