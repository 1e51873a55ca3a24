"""Install detectron2 into the current environment, in the order users expect.

Run as ``python -m siambench.transfer.install_d2`` (``make setup`` does). Standard library only:
it runs before detectron2 (and possibly before anything else) is importable.

Order:
  1. detectron2 already importable -> keep it (an official build on a GPU cluster).
  2. The official GitHub source build at a pinned commit, when github.com answers
     within a short timeout (compiled ops included).
  3. The PyPI sdist ``pb1-detectron2==0.6`` -- exactly the official v0.6 Python
     sources without the C++ sources -- verified by sha256 and installed as pure
     Python (no ``detectron2._C``), with the ``detectron2.projects`` (PointRend, DeepLab,
     Panoptic-DeepLab) that the official setup.py installs. ``siambench.transfer.d2compat`` makes it usable.
If every route fails, exit non-zero with what to do.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

# Official repository and pinned commit for the source build (route 2).
GITHUB_URL = "https://github.com/facebookresearch/detectron2.git"
GITHUB_COMMIT = "2dde706855d87baa9760fbcd0bdb6004a3937204"
# PyPI sdist (route 3) and its sha256, checked file by file against official v0.6.
SDIST_REQ = "pb1-detectron2==0.6"
SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# detectron2's setup.py also installs these projects (package_dir): detectron2.projects.<name>.
PROJECTS = {
    "point_rend": "projects/PointRend/point_rend",
    "deeplab": "projects/DeepLab/deeplab",
    "panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
# Written into the installed dist-info so `siambench doctor` can report the source.
SOURCE_MARKER = "siambench-pure-python-sdist"


def log(msg: str) -> None:
    print(f"[install_d2] {msg}", flush=True)


def detectron2_importable() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def github_reachable(timeout: float = 5.0) -> bool:
    """True when github.com:443 accepts a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def pip(*args: str, timeout: float | None = None) -> int:
    cmd = [sys.executable, "-m", "pip", *args]
    log("$ " + " ".join(cmd))
    try:
        return subprocess.call(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"pip timed out after {timeout}s")
        return 1


def install_from_github() -> bool:
    if not github_reachable():
        log("github.com is not reachable; skipping the source build")
        return False
    # No build isolation: the build imports the torch already installed here.
    rc = pip("install", "--no-build-isolation", f"git+{GITHUB_URL}@{GITHUB_COMMIT}", timeout=3600)
    return rc == 0


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(dest: Path, cache: Path | None) -> Path | None:
    if cache is not None and (cache / SDIST_NAME).is_file():
        return cache / SDIST_NAME
    # --no-build-isolation: the sdist's setup.py imports torch while pip reads its metadata.
    rc = pip("download", "--no-deps", "--no-build-isolation", "-q", "-d", str(dest), SDIST_REQ, timeout=600)
    path = dest / SDIST_NAME
    if rc != 0 or not path.is_file():
        return None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, cache / SDIST_NAME)
    return path


def install_pure_python(sdist: Path) -> None:
    """Copy the sdist's ``detectron2`` package into site-packages with a dist-info."""
    digest = sha256_of(sdist)
    if digest != SDIST_SHA256:
        raise SystemExit(
            f"[install_d2] sha256 mismatch for {sdist}: got {digest}, expected {SDIST_SHA256}. "
            "Refusing to install it; delete the file and retry."
        )
    site = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
        src = Path(tmp) / "pb1-detectron2-0.6" / "detectron2"
        dst = site / "detectron2"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        for package, folder in PROJECTS.items():  # as detectron2's setup.py: detectron2.projects.<name>
            shutil.copytree(src.parent / folder, dst / "projects" / package)
    info = site / "detectron2-0.6.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: detectron2\nVersion: 0.6\n")
    (info / "INSTALLER").write_text(SOURCE_MARKER + "\n")
    (info / "direct_url.json").write_text(
        '{"url": "https://pypi.org/project/pb1-detectron2/0.6/", '
        f'"archive_info": {{"hash": "sha256={SDIST_SHA256}"}}}}\n'
    )
    files = [p.relative_to(site) for p in (site / "detectron2").rglob("*") if p.is_file()]
    files += [info.name + "/" + n for n in ("METADATA", "INSTALLER", "direct_url.json", "RECORD")]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    log(f"installed detectron2 0.6 (pure Python, sha256 verified) into {site}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-github", action="store_true", help="do not try the GitHub source build")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("SIAMBENCH_CACHE", ".cache")),
                    help="where the verified sdist is kept between runs (default: .cache)")
    args = ap.parse_args(argv)

    if detectron2_importable():
        log("detectron2 is already importable; keeping it")
        return 0
    if not args.skip_github and install_from_github() and detectron2_importable():
        log(f"installed detectron2 from GitHub at {GITHUB_COMMIT}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch_sdist(Path(tmp), args.cache)
        if sdist is not None:
            install_pure_python(sdist)
            return 0
    log(
        "could not install detectron2. Install it yourself, then rerun `make setup`:\n"
        "  GPU cluster:  pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'\n"
        "  offline:      put pb1-detectron2-0.6.tar.gz into .cache/ (sha256 " + SDIST_SHA256 + ")"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
