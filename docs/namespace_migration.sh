#!/usr/bin/env bash
# STATUS: prepared and tested on a scratch copy (497/500 tests passed there, the same 3 failing as
# unconverted), NOT yet applied to this tree. Run it as the last change of a session, then
# reinstall editable (make setup) and run make test.
# Issue 11 item 16: install siambench's code under one `siambench` namespace, keeping the folders.
#
#   pretrain/ transfer/ convert/ benchmarks/ configs/   (unchanged layout)
#   -> import siambench.pretrain ..., torchrun -m siambench.pretrain, siambench=siambench.benchmarks.cli:main
#
# setuptools maps the folders to the package names (package_dir); `siambench` itself is an
# implicit namespace package (no folder), so a user's own pretrain/ or transfer.py in the
# working directory can no longer shadow our code.
#
# Usage: namespace.sh CHECKOUT        (idempotent: a second run changes nothing)
# Then:  .venv/bin/python -m pip install --no-deps --no-build-isolation -e CHECKOUT
#        (reinstall the editable package: setuptools' editable finder then maps siambench.<folder>
#        to CHECKOUT/<folder>; PYTHONPATH=CHECKOUT alone no longer finds `siambench`).
# Checked without touching .venv: a throwaway venv that sees .venv's packages but not its
# editable finder, then the suite there:
#   python3.11 -m venv --without-pip /tmp/nsvenv
#   echo $PWD/.venv/lib/python3.11/site-packages > /tmp/nsvenv/lib/python3.11/site-packages/venv.pth
#   /tmp/nsvenv/bin/python -m pip install --ignore-installed --no-deps --no-build-isolation -e CHECKOUT
#   cd CHECKOUT && env -u PYTHONPATH /tmp/nsvenv/bin/python -m pytest -q tests
set -euo pipefail
root=${1:?usage: namespace.sh CHECKOUT}
cd "$root"
test -f setup.py -a -d pretrain -a -d transfer -a -d convert -a -d benchmarks || {
    echo "namespace.sh: $root is not a siambench checkout" >&2; exit 2; }

python3 - <<'PY'
import re
import sys
from pathlib import Path

PKGS = "pretrain|transfer|convert|benchmarks"
changed = []

# 1. Python imports: `from X...` / `import X...` (X one of our folders) -> siambench.X.
FROM = re.compile(rf"^(\s*)from ({PKGS})(?=[.\s])", re.M)
IMPORT = re.compile(rf"^(\s*)import ({PKGS})((?:\.\w+)*)(?=\s|$)", re.M)
# 2. Dotted module names in strings, backticks (docs, docstrings) and `-m`: "X.y", `X.y`, -m X[.y].
QUOTED = re.compile(rf"([\"'`])({PKGS})\.(?=[A-Za-z_])")
DASH_M = re.compile(rf"(-m\s+)({PKGS})\b")
DASH_M_LIST = re.compile(rf"([\"']-m[\"'],\s*[\"'])({PKGS})([\"'])")
# Logger names that are a package's own name: getLogger("transfer") and transfer/main.py's
# _LOGGERS keys (the file handler of log.txt hangs on them; modules log as __name__).
GETLOGGER = re.compile(rf"(getLogger\(\s*[\"'])({PKGS})([\"'])")
LOGGER_KEYS = re.compile(rf"(_LOGGERS\s*=\s*\{{[^}}]*?)([\"'])({PKGS})\2(\s*:)")
# 3. `console script` / entry-point form X.y:main.
ENTRY = re.compile(rf"=({PKGS})\.(\w+(?:\.\w+)*):")


def convert_text(text: str, python: bool) -> str:
    # `make setup` installs detectron2 before siambench: run install_d2 by path there.
    text = text.replace("$(BIN)/python -m transfer.install_d2", "$(BIN)/python transfer/install_d2.py")
    text = text.replace("installs detectron2 with `python -m transfer.install_d2`",
                        "installs detectron2 with `python transfer/install_d2.py`")
    if python:
        text = FROM.sub(r"\1from siambench.\2", text)
        plain_imports = {m.group(2) + m.group(3) for m in IMPORT.finditer(text) if not re.match(
            r"\s+as\s", text[m.end():m.end() + 5])}
        text = IMPORT.sub(r"\1import siambench.\2\3", text)
        for dotted in sorted(plain_imports, key=len, reverse=True):  # `import X.y` then `X.y.attr` in code
            if "." in dotted:
                text = re.sub(rf"(?<![\w.\"'`/]){re.escape(dotted)}\b", "siambench." + dotted, text)
    if python:
        text = GETLOGGER.sub(r"\1siambench.\2\3", text)
        text = LOGGER_KEYS.sub(r"\1\2siambench.\3\2\4", text)
    if python:  # docstrings and strings; prose in docs keeps naming the folders' modules
        text = QUOTED.sub(r"\1siambench.\2.", text)
    text = DASH_M.sub(r"\1siambench.\2", text)
    text = DASH_M_LIST.sub(r"\1siambench.\2\3", text)
    text = ENTRY.sub(r"=siambench.\1.\2:", text)
    return text


files = [p for d in ("pretrain", "transfer", "convert", "benchmarks", "tests") for p in Path(d).rglob("*.py")]
files += [Path(p) for p in ("Makefile", "README.md", "pytest.ini", "MANIFEST.in") if Path(p).exists()]
files += sorted(Path("docs").rglob("*.md")) + sorted(Path("configs").rglob("*.yaml"))
files += sorted(Path(".ci").rglob("*")) if Path(".ci").is_dir() else []
for path in files:
    if not path.is_file() or "__pycache__" in path.parts:
        continue
    old = path.read_text(encoding="utf-8")
    new = convert_text(old, path.suffix == ".py")
    if new != old:
        path.write_text(new, encoding="utf-8")
        changed.append(str(path))

# 4. setup.py: map the folders to siambench.<folder>, console script into the namespace.
setup = Path("setup.py")
text = setup.read_text(encoding="utf-8")
if "FOLDERS = (" not in text:
    old_packages = 'packages=find_packages(include=["pretrain*", "transfer*", "convert*", "benchmarks*"]) + CONFIG_PACKAGES,'
    old_dir = 'package_dir={"siambench.configs": "configs"},'
    if old_packages not in text or old_dir not in text:
        sys.exit("namespace.sh: setup.py does not have the expected packages=/package_dir= lines; edit it by hand")
    text = text.replace(old_packages,
                        'packages=["siambench." + p for p in find_packages(include=[f"{f}*" for f in FOLDERS])]\n'
                        '    + CONFIG_PACKAGES,')
    text = text.replace(old_dir,
                        '# The code folders install as siambench.<folder>; `siambench` is an implicit namespace.\n'
                        '    package_dir={**{f"siambench.{f}": f for f in FOLDERS}, "siambench.configs": "configs"},')
    text = text.replace("\nsetup(\n", '\n# Folders of the checkout that are packages of the `siambench` namespace.\n'
                                      'FOLDERS = ("pretrain", "transfer", "convert", "benchmarks")\n\nsetup(\n', 1)
    text = ENTRY.sub(r"=siambench.\1.\2:", text)
    setup.write_text(text, encoding="utf-8")
    changed.append("setup.py")

# 5. A test that our code is not shadowed by a user's folder of the same name.
test = Path("tests/test_namespace.py")
body = '''"""Our code lives in the `siambench` namespace: a user's own pretrain/ cannot shadow it (issue 11 item 16)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_users_pretrain_folder_does_not_shadow_ours(tmp_path: Path) -> None:
    for name in ("pretrain", "transfer", "benchmarks", "convert"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise SystemExit('shadowed')\\n")
    run = subprocess.run([sys.executable, "-m", "siambench.pretrain", "--help"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "siambench pretrain" in run.stdout


def test_packages_are_under_the_namespace() -> None:
    import siambench.benchmarks.cli as cli

    for module, _ in cli.COMMANDS.values():
        assert module.startswith("siambench.")
'''
if not test.exists() or test.read_text() != body:
    test.write_text(body, encoding="utf-8")
    changed.append(str(test))

for path in changed:  # every converted Python file still parses
    if path.endswith(".py"):
        compile(Path(path).read_text(encoding="utf-8"), path, "exec")

print(f"namespace.sh: {len(changed)} file(s) changed" + ("".join(f"\n  {c}" for c in changed) if changed else ""))
PY
# Anything still importing a bare folder name is a bug of this script: list it and fail.
left=$(grep -rnE "^\s*(from|import) (pretrain|transfer|convert|benchmarks)\b" --include=*.py . || true)
if [ -n "$left" ]; then echo "namespace.sh: unconverted imports:"; echo "$left"; exit 1; fi
