"""The restricted unpickler: plain weights load, anything that could run code does not."""
from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from siambench.convert.errors import UnsafeCheckpointError
from siambench.convert.safe_pickle import load_weights_pkl, safe_loads


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_weights_round_trip(protocol):
    obj = {
        "model": collections.OrderedDict(
            w=np.arange(12, dtype=np.float32).reshape(3, 4),
            h=np.ones((2, 2), dtype=np.float16),
            i=np.array([1, 2], dtype=np.int64),
            f=np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        ),
        "__author__": "siambench",
        "matching_heuristics": True,
        "provenance": {"epoch": None, "mean": [1.5, 2.0], "t": (1, "a"), "b": b"\x00\xff", "s": np.float32(2.5)},
    }
    out = safe_loads(pickle.dumps(obj, protocol=protocol))
    assert out["provenance"] == obj["provenance"]
    for k, v in obj["model"].items():
        assert out["model"][k].dtype == v.dtype and np.array_equal(out["model"][k], v)


def test_python2_style_pickle_with_numpy_core_names():
    # detectron2's model-zoo .pkl files are protocol-2 pickles naming numpy.core.multiarray.
    data = pickle.dumps({"blobs": {"conv1_w": np.ones(3, np.float32)}}, protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert np.array_equal(safe_loads(data)["blobs"]["conv1_w"], np.ones(3, np.float32))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    "make",
    [
        lambda m: {"model": {}, "x": _Payload(m)},  # __reduce__ -> os.mkdir
        lambda m: {"model": {"w": np.array([_Payload(m)], dtype=object)}},  # hidden in an object array
    ],
    ids=["reduce", "object-array"],
)
def test_code_carrying_pickles_are_refused_before_running(tmp_path, protocol, make):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(make(str(marker)), protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=r"evil.pkl: refused: not a plain weights pickle"):
        load_weights_pkl(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj, reason",
    [
        (np.array([1, 2], dtype=object), r"object dtype"),
        (np.ma.masked_array([1.0, 2.0]), r"numpy.ma.core"),
        ({1, 2}, r"set"),  # built without a global under protocol 4, caught by the type check
    ],
)
def test_non_plain_types_are_refused(obj, reason):
    with pytest.raises(UnsafeCheckpointError, match=reason):
        safe_loads(pickle.dumps({"model": obj}, protocol=4))


def test_ndarray_is_not_callable_from_a_pickle():
    # GLOBAL numpy.ndarray, args ((2,), "O"), REDUCE: would build an object array directly.
    data = b"\x80\x02cnumpy\nndarray\nK\x02\x85X\x01\x00\x00\x00O\x86R."
    with pytest.raises(UnsafeCheckpointError, match=r"not callable"):
        safe_loads(data)


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(UnsafeCheckpointError, match=r"empty"):
        load_weights_pkl(empty)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeCheckpointError, match=r"garbage.pkl: refused"):
        load_weights_pkl(garbage)
