"""install_d2 fetches the pinned sdist itself from the configured simple index (no pip resolver),
keeps only a file with the pinned sha256, and honours pip's index settings."""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from siambench.transfer import install_d2

PAYLOAD = b"not really an sdist, but bytes with a known sha256"
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(install_d2, "SDIST_SHA256", DIGEST)
    return DIGEST


def _html_index(root: Path, digest: str | None) -> str:
    """A PEP 503 file:// index holding the sdist (and a decoy with a similar name)."""
    files = root / "files"
    files.mkdir(parents=True)
    (files / install_d2.SDIST_NAME).write_bytes(PAYLOAD)
    page = root / "simple" / install_d2.SDIST_PROJECT
    page.mkdir(parents=True)
    fragment = f"#sha256={digest}" if digest else ""
    page.joinpath("index.html").write_text(
        "<html><body>"
        f'<a href="../../files/pb1-detectron2-0.5.tar.gz#sha256={"0" * 64}">pb1-detectron2-0.5.tar.gz</a>'
        f'<a href="../../files/{install_d2.SDIST_NAME}{fragment}">{install_d2.SDIST_NAME}</a>'
        "</body></html>")
    return (root / "simple").as_uri()


def test_fetches_the_sdist_from_a_pep503_index_and_verifies_it(tmp_path: Path, pinned: str) -> None:
    index = _html_index(tmp_path / "index", pinned)
    cache = tmp_path / "cache"
    got = install_d2.fetch_sdist(cache, {"index-url": index})
    assert got == cache / install_d2.SDIST_NAME and got.read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == [install_d2.SDIST_NAME]  # no .part left
    # a second run uses the cache: the index may be gone
    assert install_d2.fetch_sdist(cache, {"index-url": (tmp_path / "gone").as_uri()}) == got


@pytest.mark.parametrize("stated", ["0" * 64, None], ids=["index-states-another-hash", "content-differs"])
def test_a_file_without_the_pinned_sha256_is_never_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        stated: str | None, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(install_d2, "SDIST_SHA256", "f" * 64)
    index = _html_index(tmp_path / "index", stated)
    cache = tmp_path / "cache"
    assert install_d2.fetch_sdist(cache, {"index-url": index}) is None
    assert not cache.exists() or not any(cache.iterdir())
    assert "f" * 64 in capsys.readouterr().out  # the log names the pinned hash


def test_the_extra_index_is_searched_after_the_main_one(tmp_path: Path, pinned: str) -> None:
    index = _html_index(tmp_path / "index", pinned)
    settings = {"index-url": (tmp_path / "empty").as_uri(), "extra-index-url": f"{index} file:///nowhere"}
    assert install_d2.fetch_sdist(tmp_path / "cache", settings) is not None


class _Pep691(http.server.BaseHTTPRequestHandler):
    """A PEP 691 JSON simple index behind basic auth (user:secret)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"user:secret").decode():
            self.send_error(401)
        elif self.path == f"/simple/{install_d2.SDIST_PROJECT}/":
            assert "application/vnd.pypi.simple.v1+json" in self.headers["Accept"]
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": install_d2.SDIST_PROJECT, "files": [
                {"filename": install_d2.SDIST_NAME, "url": "/files/sdist", "hashes": {"sha256": DIGEST}}]})
            self._send(body.encode(), "application/vnd.pypi.simple.v1+json")
        elif self.path == "/files/sdist":
            self._send(PAYLOAD, "application/octet-stream")
        else:
            self.send_error(404)

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def json_index() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pep691)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_pip_index_url_from_the_environment_with_credentials_and_pep691_json(
        tmp_path: Path, pinned: str, json_index: http.server.ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    url = f"http://user:secret@127.0.0.1:{json_index.server_port}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    settings = install_d2.pip_settings()
    assert install_d2.index_urls(settings) == [url]
    got = install_d2.fetch_sdist(tmp_path / "cache", settings)
    assert got is not None and got.read_bytes() == PAYLOAD
    assert "secret" not in capsys.readouterr().out  # logs redact the password


def test_a_broken_download_leaves_nothing(tmp_path: Path, pinned: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object, url: str, dest: Path) -> str:
        dest.write_bytes(PAYLOAD[:10])
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(install_d2._Index, "download", broken)
    cache = tmp_path / "cache"
    assert install_d2.fetch_sdist(cache, {"index-url": _html_index(tmp_path / "index", pinned)}) is None
    assert not any(cache.iterdir())


def test_pip_settings_follow_pips_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = ("global.index-url='https://global/simple'\n"
               "install.index-url='https://install/simple'\n"
               "global.extra-index-url='file:///a file:///b'\n"
               "global.proxy='http://proxy:3128'\n"
               ":env:.default-timeout='7'\n"
               "global.no-index='false'\n"
               "global.find-links='/ignored'\n")
    monkeypatch.setattr(install_d2.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, listing, ""))
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_PROXY", "PIP_CERT",
                 "PIP_TIMEOUT", "PIP_DEFAULT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = install_d2.pip_settings()
    assert settings == {"index-url": "https://install/simple", "extra-index-url": "file:///a file:///b",
                        "proxy": "http://proxy:3128", "default-timeout": "7", "no-index": "false"}
    assert install_d2.index_urls(settings) == ["https://install/simple", "file:///a", "file:///b"]
    assert install_d2._Index(settings).timeout == 7.0
    monkeypatch.setenv("PIP_INDEX_URL", "https://env/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "yes")
    assert install_d2.pip_settings()["index-url"] == "https://env/simple"
    assert install_d2.index_urls(install_d2.pip_settings()) == []


def test_without_pip_settings_the_index_is_pypi() -> None:
    assert install_d2.index_urls({}) == ["https://pypi.org/simple/"]


def test_failure_message_names_the_cache_and_the_pinned_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(install_d2, "detectron2_importable", lambda: False)
    monkeypatch.setattr(install_d2, "pip_settings", lambda: {"no-index": "1"})
    assert install_d2.main(["--skip-github", "--cache", str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert str(tmp_path / "c") in out and install_d2.SDIST_SHA256 in out
    assert not (tmp_path / "c").exists()


def test_make_setup_runs_it_by_path_with_the_standard_library_only(tmp_path: Path) -> None:
    script = Path(install_d2.__file__)
    # -I: isolated (no site-packages, no PYTHONPATH): what a bare venv has before anything is installed
    done = subprocess.run([install_d2.sys.executable, "-I", "-S", str(script), "--help"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "python transfer/install_d2.py" in done.stdout and "python -m siambench.transfer.install_d2" in done.stdout


def test_the_cache_is_the_checkouts_else_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIAMBENCH_CACHE", raising=False)
    assert install_d2.in_checkout() and install_d2.default_cache() == install_d2.CHECKOUT / ".cache"
    assert install_d2.fix_hint().startswith("`make setup`")
    monkeypatch.setattr(install_d2, "CHECKOUT", tmp_path / "site-packages" / "siambench")  # as from a wheel
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert not install_d2.in_checkout() and install_d2.default_cache() == tmp_path / "xdg" / "siambench"
    assert "python -m siambench.transfer.install_d2" in install_d2.fix_hint()
    monkeypatch.setenv("SIAMBENCH_CACHE", str(tmp_path / "mine"))
    assert install_d2.default_cache() == tmp_path / "mine"
