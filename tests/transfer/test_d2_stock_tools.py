"""detectron2's own tools work on our install: ``default_setup`` / ``collect_env_info``
(what ``tools/train_net.py`` runs first) and the ``detectron2.projects`` of its setup.py."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from siambench.transfer import d2compat, install_d2

STOCK_SETUP = """
import sys
from siambench.transfer import d2compat, roi_heads  # noqa: F401  (patches, then registers our heads)
from siambench.transfer.config import get_transfer_cfg, task_config_path
from detectron2.engine import default_argument_parser, default_setup
args = default_argument_parser().parse_args(
    ["--config-file", str(task_config_path("synth_voc07")), "OUTPUT_DIR", sys.argv[1], "MODEL.DEVICE", "cpu"])
cfg = get_transfer_cfg()
cfg.merge_from_file(args.config_file)
cfg.merge_from_list(args.opts)
default_setup(cfg, args)
"""


def test_collect_env_info_runs() -> None:
    from detectron2.utils.collect_env import collect_env_info

    text = collect_env_info()
    assert "detectron2" in text and "PyTorch" in text
    if not d2compat.has_compiled_ops():
        assert "Compiler" in text and "none (pure-Python detectron2" in text


def test_default_setup_of_train_net_runs_on_our_configs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    run = subprocess.run([sys.executable, "-c", STOCK_SETUP, str(tmp_path)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "config.yaml").is_file()
    log = (tmp_path / "log.txt").read_text()
    assert "Environment info" in log and "Res5ROIHeadsExtraNorm" in log


def _fake_sdist(path: Path) -> Path:
    """The layout of pb1-detectron2-0.6.tar.gz: the package plus projects/<Name>/<package>."""
    files = {"detectron2/__init__.py": "__version__ = '0.6'\n", "detectron2/projects/__init__.py": ""}
    for package, folder in install_d2.PROJECTS.items():
        files[f"{folder}/__init__.py"] = f"NAME = {package!r}\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"pb1-detectron2-0.6/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return path


def test_pure_python_install_includes_detectron2_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdist = _fake_sdist(tmp_path / install_d2.SDIST_NAME)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(install_d2, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    monkeypatch.setattr(install_d2.sysconfig, "get_paths", lambda: {"purelib": str(site)})
    install_d2.install_pure_python(sdist)
    record = (site / "detectron2-0.6.dist-info" / "RECORD").read_text()
    for package in install_d2.PROJECTS:  # as the official setup.py: detectron2.projects.<package>
        init = site / "detectron2" / "projects" / package / "__init__.py"
        assert init.read_text() == f"NAME = {package!r}\n"
        assert f"detectron2/projects/{package}/__init__.py" in record
