"""Install detectron2 into the current environment, in the order users expect.

Run as ``python transfer/install_d2.py`` from a checkout (``make setup`` does), or as
``python -m siambench.transfer.install_d2`` where siambench is installed (from a wheel).
Standard library only: it runs before detectron2 (and possibly before anything else) is
importable.

Order:
  1. detectron2 already importable -> keep it (an official build on a GPU cluster).
  2. The official GitHub source build at a pinned commit, when github.com answers
     within a short timeout (compiled ops included); ``--skip-github`` skips it.
  3. The PyPI sdist ``pb1-detectron2==0.6`` -- exactly the official v0.6 Python
     sources without the C++ sources -- installed as pure Python (no ``detectron2._C``),
     with the ``detectron2.projects`` (PointRend, DeepLab, Panoptic-DeepLab) that the
     official setup.py installs. ``siambench.transfer.d2compat`` makes it usable.
     The sdist is taken from the cache folder, else downloaded by its URL on the package
     index's simple page (PEP 691 JSON or PEP 503 HTML), from pip's configured
     ``index-url`` and ``extra-index-url`` with pip's ``proxy``, ``cert`` and ``timeout``
     (``pip config list`` and ``PIP_*``; default https://pypi.org/simple/). pip's resolver
     is not involved: pip >= 26.3 refuses this sdist's metadata (a direct-URL dependency in
     its ``all`` extra). Only a file with the pinned sha256 is kept and installed.
     detectron2's own dependencies are not installed here: they are the extra
     ``siambench[detectron2]`` (``requirements/base.txt`` in a checkout).
If every route fails, exit non-zero with what to do.
"""
from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import importlib.util
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

# Official repository and pinned commit for the source build (route 2).
GITHUB_URL = "https://github.com/facebookresearch/detectron2.git"
GITHUB_COMMIT = "2dde706855d87baa9760fbcd0bdb6004a3937204"
# PyPI sdist (route 3) and its sha256, checked file by file against official v0.6.
SDIST_PROJECT = "pb1-detectron2"
SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
DEFAULT_INDEX = "https://pypi.org/simple/"
# pip options honoured when fetching the sdist, and the pip config sections read, strongest first.
PIP_OPTIONS = ("index-url", "extra-index-url", "no-index", "proxy", "cert", "timeout", "default-timeout")
PIP_SECTIONS = (":env:", "download", "install", "global")
SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html, text/html;q=0.1"
# detectron2's setup.py also installs these projects (package_dir): detectron2.projects.<name>.
PROJECTS = {
    "point_rend": "projects/PointRend/point_rend",
    "deeplab": "projects/DeepLab/deeplab",
    "panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
# Written into the installed dist-info so `siambench doctor` can report the source.
SOURCE_MARKER = "siambench-pure-python-sdist"
# The checkout's root when this file runs from one (it has setup.py); site-packages/siambench otherwise.
CHECKOUT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[install_d2] {msg}", flush=True)


def in_checkout() -> bool:
    """True when this file is the one in a source checkout (editable install or by path), not a wheel's."""
    return (CHECKOUT / "setup.py").is_file() and (CHECKOUT / "transfer" / "install_d2.py").is_file()


def fix_hint() -> str:
    """The command that installs detectron2 and its dependencies for this kind of installation."""
    if in_checkout():
        return "`make setup` (README, 'Installation')"
    return ("`pip install 'siambench[detectron2]' && python -m siambench.transfer.install_d2` "
            "(README, 'From a wheel')")


def default_cache() -> Path:
    """``$SIAMBENCH_CACHE``; else the checkout's ``.cache``; else ``~/.cache/siambench``."""
    if os.environ.get("SIAMBENCH_CACHE"):
        return Path(os.environ["SIAMBENCH_CACHE"]).expanduser()
    if in_checkout():
        return CHECKOUT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "siambench"


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


def _unquote_value(text: str) -> str:
    try:
        value = ast.literal_eval(text)  # `pip config list` prints key='value'
    except (ValueError, SyntaxError):
        return text.strip()
    return value if isinstance(value, str) else text.strip()


def pip_settings() -> dict[str, str]:
    """pip's effective :data:`PIP_OPTIONS`: ``PIP_*`` environment, then the config files'
    ``[download]``, ``[install]``, ``[global]`` sections (``pip config list``; skipped without pip)."""
    found: dict[str, dict[str, str]] = {}
    try:
        listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                                 text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        section, _, option = key.strip().rpartition(".")
        if sep and option in PIP_OPTIONS:
            found.setdefault(option, {})[section] = _unquote_value(value)
    settings = {}
    for option in PIP_OPTIONS:
        env = os.environ.get("PIP_" + option.upper().replace("-", "_"))
        by_section = found.get(option, {})
        value = env if env is not None else next((by_section[s] for s in PIP_SECTIONS if s in by_section), None)
        if value is not None:
            settings[option] = value
    return settings


def index_urls(settings: dict[str, str]) -> list[str]:
    """The simple indexes pip would search, in pip's order; none under ``no-index``."""
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        return []
    return [settings.get("index-url") or DEFAULT_INDEX, *settings.get("extra-index-url", "").split()]


def redact(url: str) -> str:
    """``url`` without a password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                     + (f":{parts.port}" if parts.port else "")))


class _Index:
    """Reads a simple index and its files the way pip is configured to (proxy, cert, timeout)."""

    def __init__(self, settings: dict[str, str]) -> None:
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=settings.get("cert") or None))]
        if settings.get("proxy"):  # else urllib's default: the *_proxy environment variables
            handlers.append(urllib.request.ProxyHandler({"http": settings["proxy"], "https": settings["proxy"]}))
        self.opener = urllib.request.build_opener(*handlers)
        self.timeout = float(settings.get("timeout") or settings.get("default-timeout") or 60)
        self.credentials: dict[str, str] = {}  # host[:port] -> Authorization header

    def open(self, url: str, accept: str = "*/*"):
        """An open response for ``url``: a local folder's index.html; ``user:password@`` sent as basic
        auth, also to later URLs on the same host (as pip does for the files an index links to)."""
        parts = urlsplit(url)
        headers = {"Accept": accept}
        if parts.scheme == "file":
            path = Path(urllib.request.url2pathname(unquote(parts.path)))
            url = (path / "index.html").as_uri() if path.is_dir() else url
        else:
            host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
            if parts.username is not None:
                token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
                self.credentials[host] = "Basic " + base64.b64encode(token).decode()
                url = urlunsplit(parts._replace(netloc=host))
            if host in self.credentials:
                headers["Authorization"] = self.credentials[host]
        return self.opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout)

    def sdist_links(self, index: str) -> list[tuple[str, str | None]]:
        """(URL, sha256 the index states or None) of every :data:`SDIST_NAME` on the project's page."""
        page = index.rstrip("/") + f"/{SDIST_PROJECT}/"
        with self.open(page, SIMPLE_ACCEPT) as response:
            body, base = response.read(), response.geturl()
            kind = response.headers.get_content_type()
        if kind == "application/vnd.pypi.simple.v1+json":
            return [(urljoin(base, f["url"]), f.get("hashes", {}).get("sha256"))
                    for f in json.loads(body)["files"] if f.get("filename") == SDIST_NAME]
        anchors = _Anchors()
        anchors.feed(body.decode("utf-8", "replace"))
        links = []
        for href in anchors.hrefs:
            url, _, fragment = urljoin(base, href).partition("#")
            if unquote(urlsplit(url).path).rsplit("/", 1)[-1] == SDIST_NAME:
                algorithm, _, digest = fragment.partition("=")
                links.append((url, digest if algorithm == "sha256" else None))
        return links

    def download(self, url: str, dest: Path) -> str:
        """Writes ``url`` to ``dest``; returns its sha256."""
        h = hashlib.sha256()
        with self.open(url) as response, open(dest, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                f.write(chunk)
        return h.hexdigest()


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def fetch_sdist(cache: Path, settings: dict[str, str]) -> Path | None:
    """The verified sdist in ``cache``: kept from an earlier run, else downloaded from the indexes."""
    target = cache / SDIST_NAME
    if target.is_file():
        return target  # install_pure_python checks its sha256
    index = _Index(settings)
    for url in index_urls(settings):
        try:
            links = index.sdist_links(url)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:  # HTTP 404, timeouts, bad JSON
            log(f"{redact(url)}: {SDIST_PROJECT} not found ({e})")
            continue
        for link, stated in links:
            if stated is not None and stated != SDIST_SHA256:
                log(f"{redact(link)}: the index states sha256 {stated}, not the pinned {SDIST_SHA256}; skipped")
                continue
            cache.mkdir(parents=True, exist_ok=True)
            part = cache / (SDIST_NAME + ".part")
            log(f"downloading {redact(link)}")
            try:
                digest = index.download(link, part)
            except (OSError, http.client.HTTPException) as e:
                part.unlink(missing_ok=True)
                log(f"{redact(link)}: download failed ({e})")
                continue
            if digest != SDIST_SHA256:
                part.unlink()
                log(f"{redact(link)}: sha256 {digest}, not the pinned {SDIST_SHA256}; discarded")
                continue
            return part.replace(target)
    return None


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
    ap.add_argument("--cache", type=Path, default=default_cache(),
                    help=f"where the verified sdist is kept between runs (default: {default_cache()})")
    args = ap.parse_args(argv)

    if detectron2_importable():
        log("detectron2 is already importable; keeping it")
        return 0
    if not args.skip_github and install_from_github() and detectron2_importable():
        log(f"installed detectron2 from GitHub at {GITHUB_COMMIT}")
        return 0
    sdist = fetch_sdist(args.cache, pip_settings())
    if sdist is not None:
        install_pure_python(sdist)
        return 0
    log(
        "could not install detectron2. Install it yourself, then rerun this command:\n"
        "  GPU cluster:  pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'\n"
        f"  offline:      put {SDIST_NAME} (sha256 {SDIST_SHA256}) into {args.cache}/"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
