"""The wheel installs like a library: configs inside it, truthful metadata, test-only pytest."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str) -> list[str]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def wheel(siambench_wheel: Path) -> Path:
    return siambench_wheel


def test_wheel_ships_every_config(wheel: Path) -> None:
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    expected = {"siambench/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert expected and shipped == expected


def test_installed_wheel_finds_its_configs_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what `pip install siambench.whl` puts in site-packages
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from siambench.pretrain.utils import paths

    ns = paths.__name__.rpartition("pretrain.")[0]  # the packages' namespace prefix ("siambench." or "")
    code = (
        f"from {ns}pretrain.utils.paths import CONFIG_ROOT, resolve\n"
        f"from {ns}benchmarks.pipeline.pipeline_config import load_pipeline\n"
        f"from {ns}pretrain.utils.config import load_config\n"
        f"from {ns}pretrain.config import get_cfg\n"
        "print(CONFIG_ROOT)\n"
        "print(resolve('configs/benchmarks/demo.yaml'))\n"
        "load_pipeline('configs/benchmarks/demo.yaml')\n"
        "print(load_config(get_cfg(), 'configs/pretrain/synth_r18.yaml').MODEL.ARCH)\n"
        f"from {ns}transfer.config import available_tasks, task_config_path\n"
        "print(','.join(available_tasks()), task_config_path('synth_voc07'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}  # the unpacked wheel only, not this checkout
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    root, demo, arch, tasks, synth_voc07 = run.stdout.split()
    assert Path(root) == site / "siambench" / "configs"
    assert Path(demo) == site / "siambench" / "configs" / "benchmarks" / "demo.yaml"
    assert arch == "resnet18"
    assert {"voc07", "coco", "synth_voc07"} <= set(tasks.split(","))
    assert Path(synth_voc07) == site / "siambench" / "configs" / "transfer" / "synth_voc07.yaml"


def test_a_users_own_configs_win_over_the_shipped_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from siambench.pretrain.utils.paths import CONFIG_ROOT, resolve

    monkeypatch.chdir(tmp_path)
    assert resolve("configs/transfer/voc07.yaml") == CONFIG_ROOT / "transfer" / "voc07.yaml"
    mine = tmp_path / "configs" / "transfer" / "voc07.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("{}\n")
    assert resolve("configs/transfer/voc07.yaml") == Path("configs/transfer/voc07.yaml")
    assert resolve("configs/transfer/nope.yaml") == Path("configs/transfer/nope.yaml")  # error names the input


def _python_requires() -> str:
    match = re.search(r'python_requires="([^"]+)"', (ROOT / "setup.py").read_text())
    assert match, "setup.py has no python_requires"
    return match.group(1)


def test_python_requires_is_what_the_pinned_versions_need() -> None:
    """The oldest Python every pinned (and installed) dependency accepts is what we declare."""
    needs = []
    for line in _requirements("constraints.txt"):
        name, _, version = line.partition("==")
        try:
            if importlib.metadata.version(name) != version:
                continue
        except importlib.metadata.PackageNotFoundError:
            continue
        spec = importlib.metadata.metadata(name).get("Requires-Python")
        if spec:
            needs.append((name, SpecifierSet(spec)))
    assert len(needs) > 10
    minors = [Version(f"3.{m}") for m in range(6, 20)]
    oldest = next(v for v in minors if all(v in s for _, s in needs))
    assert SpecifierSet(_python_requires()) == SpecifierSet(f">={oldest}"), \
        [n for n, s in needs if Version(f"3.{oldest.minor - 1}") not in s]
    assert f"Python >= {oldest}" in (ROOT / "README.md").read_text()


def test_pytest_is_a_test_dependency_only() -> None:
    assert "pytest" not in _requirements("base.txt")
    assert _requirements("test.txt") == ["-r base.txt", "pytest"]
    assert "-r requirements/test.txt" in (ROOT / "Makefile").read_text()  # `make test` still gets pytest
    setup = (ROOT / "setup.py").read_text()
    assert '"test": ["pytest"]' in setup and "install_requires" in setup
    assert "pytest" not in setup.split("install_requires")[1].split("]")[0]


def _declared(wheel: Path) -> dict[str, str]:
    """Canonical distribution name -> the extra that declares it ("" for install_requires), from the wheel."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    declared = {}
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.partition(":")[2].strip())
            extra = next((e for e in ("detectron2", "fast-eval", "test")
                          if req.marker and req.marker.evaluate({"extra": e})), "")
            declared[canonicalize_name(req.name)] = extra
    return declared


def test_doctor_checks_exactly_the_declared_runtime_dependencies(wheel: Path) -> None:
    from packaging.utils import canonicalize_name

    from siambench.benchmarks.doctor import PACKAGES

    declared = {name: extra for name, extra in _declared(wheel).items() if extra != "test"}
    assert {"cloudpickle", "omegaconf", "tensorboard", "setuptools"} <= {n for n, e in declared.items()
                                                                         if e == "detectron2"}
    assert {canonicalize_name(p.distribution): p.extra for p in PACKAGES.values()} == declared
    required = {canonicalize_name(p.distribution) for p in PACKAGES.values() if p.required}
    assert {"tensorboard", "cloudpickle", "omegaconf", "torch", "pycocotools"} <= required


def test_requirements_base_is_the_wheels_runtime_dependencies(wheel: Path) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    base = {canonicalize_name(Requirement(line).name) for line in _requirements("base.txt")}
    assert base == {name for name, extra in _declared(wheel).items() if extra != "test"}
