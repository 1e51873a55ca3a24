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

:func:`load_detectron2_weights` is the one reading of a ``.pkl`` as detectron2 reads
it (model-zoo layout as is, Caffe2/Detectron1 blobs renamed for its name heuristics),
through the restricted unpickler. ``siambench transfer``'s checkpointer
(``transfer.checkpoint.SafeDetectionCheckpointer``) and ``convert.verify`` use it.
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

__all__ = ["load_weights_pkl", "load_detectron2_weights", "safe_loads"]


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


def load_detectron2_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A ``.pkl`` weights file as detectron2's ``DetectionCheckpointer._load_file`` returns it.

    A detectron2 model-zoo or ``siambench convert`` file (``model`` and ``__author__``) is
    returned as is; anything else is a Caffe2 / Detectron1 file, as detectron2 interprets it:
    its ``blobs`` (or the top level), less the ``*_momentum`` solver state, with
    ``matching_heuristics`` for detectron2's name conversion.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling, or holds no dict.
    """
    data = load_weights_pkl(path)
    if not isinstance(data, dict):
        raise UnsafeCheckpointError(f"{path}: holds a {type(data).__name__}, not a weights dict")
    if "model" in data and "__author__" in data:
        return data
    blobs = data.get("blobs", data)
    return {"model": {k: v for k, v in blobs.items() if not k.endswith("_momentum")}, "__author__": "Caffe2",
            "matching_heuristics": True}
