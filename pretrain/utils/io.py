"""File I/O of the whole suite: atomic writes, the one weights-only checkpoint reader, sha256.

Every file is written to a temporary sibling, flushed and fsynced, then moved over
the destination with ``os.replace`` (atomic on POSIX and Windows). Every ``torch.save``
file is read by :func:`load_weights_only` (``torch.load(weights_only=True)``: a file cannot
run code while it loads), whose errors are one line naming the file and the fix. torch is
imported only inside the functions that need it, so light commands (tables, ``--help``)
do not pay for it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import CheckpointError, UnsafeCheckpointError, UserError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success move it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _about(e, path) from e
    try:
        # mkstemp creates 0600; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        disk = _disk_error(e, tmp)
        if disk is not None:
            raise _about(disk, path) from e
        raise


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _disk_error(exc: BaseException, tmp: str) -> OSError | None:
    """The full-disk / read-only / permission error in ``exc``'s chain that is about the temp
    file (it names no file, or the temp file); None if there is none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS and exc.filename in (None, tmp):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _about(e: OSError, path: Path) -> OSError:
    """``e`` naming the file being written, not the temp file beside it (one line for the CLI)."""
    return type(e)(e.errno, e.strerror or os.strerror(e.errno), str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON; NaN/inf are refused rather than written as invalid JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch  # lazy: table/report/--help/--dry-run import this module and must stay light

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_link(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` the same file as ``src`` atomically: a hard link (no second copy of a
    checkpoint's weights and optimizer state on disk), or a copy where links are unsupported."""
    import shutil

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"  # a pickle protocol >= 2 opcode: legacy torch.save format
UNSAFE_FIX = ("pass weights converted by `siambench convert` (.pkl) or a checkpoint written by siambench, "
              "or re-save just the state_dict with torch.save")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _torch_reason(e: BaseException) -> str:
    """The informative line of torch's weights_only error (it is long and generic)."""
    lines = str(e).splitlines()
    return next((line.strip() for line in lines if "GLOBAL" in line or "Unsupported" in line), _first_line(e))


def check_torch_file(path: str | os.PathLike, error: type[UserError] = CheckpointError, fix: str = "") -> bytes:
    """Refuse a path that cannot be a ``torch.save`` file; return its first 4 bytes.

    Raises:
        ``error``: no such file, or it is empty or does not start like a torch.save file.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such checkpoint file; check the path")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise error(f"{path} is empty (0 bytes: the file is empty after an interrupted save, copy or download)"
                    f"{'; ' + fix if fix else ''}")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise error(f"{path}: not a PyTorch checkpoint (starts with {head!r}); pass a file written by torch.save")
    return head


def load_weights_only(path: str | os.PathLike, *, mmap: bool = False, error: type[UserError] = CheckpointError,
                      fix: str = "", unsafe_fix: str = UNSAFE_FIX) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with one-line errors.

    ``mmap`` maps the tensors instead of reading them (cheap: for "is it readable?").
    ``fix`` ends the message of an unreadable file, ``unsafe_fix`` that of a code-carrying one.

    Raises:
        UnsafeCheckpointError: loading it needs arbitrary unpickling (it could run code).
        ``error`` (default CheckpointError): missing, empty, truncated, or not a torch.save file.
        OSError: a permission or disk error, as such.
    """
    import torch  # lazy: see the module doc

    head = check_torch_file(path, error, fix)
    end = f"; {fix}" if fix else ""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if head.startswith(_ZIP_MAGIC) or "GLOBAL" in str(e):
            raise UnsafeCheckpointError(
                f"{path}: refused: loading it needs arbitrary unpickling ({_torch_reason(e)}), which could run "
                f"code hidden in the file. siambench reads checkpoints with torch.load(weights_only=True); "
                f"{unsafe_fix}") from None
        raise error(f"{path}: not a torch.save checkpoint (a plain pickle?; {_torch_reason(e)}){end}") from None
    except OSError as e:
        if e.errno is not None:
            raise  # permissions, disk errors: reported as such
        raise error(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)}): truncated or in another "
                    f"format{end}") from None
    except Exception as e:  # EOFError, RuntimeError (truncated zip), ValueError, KeyError ...
        raise error(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {_first_line(e)}): "
                    f"truncated or in another format{end}") from None
