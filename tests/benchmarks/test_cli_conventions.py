"""CLI conventions shared with detectron2's tools, and every ``--help`` example runs as written.

An example "runs" when it gets through argument parsing and config validation: commands
with ``--dry-run`` dry-run it (exit 0); the other config commands are stopped right after
their overrides merged into the defaults (an unknown key fails there); commands without a
config are stopped after parsing.
"""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from siambench.benchmarks import cli

# Positional arguments a command needs before an ``e.g.`` override example can be tried.
BASE_ARGV = {"transfer": ["--task", "synth_voc07", "--weights", "scratch"], "run": ["configs/benchmarks/demo.yaml"]}
INPUT_SUFFIXES = (".pkl", ".pth", ".tar")  # example inputs we create as placeholders


class _Reached(Exception):
    """The example got through parsing (and config validation, where there is one)."""


def _parser_of(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    seen: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        seen.append(self)
        raise _Reached

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", capture)
        m.setattr(argparse.ArgumentParser, "parse_intermixed_args", capture)  # `siambench run`: flags after overrides
        with pytest.raises(_Reached):
            importlib.import_module(cli.COMMANDS[name][0]).main([])
    return seen[0]


def _examples(name: str, parser: argparse.ArgumentParser) -> list[list[str]]:
    """``siambench NAME ...`` lines of the help text, and the ``e.g.`` of the KEY VALUE help."""
    text = "\n".join(filter(None, [parser.description, parser.epilog])).replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        match = re.match(rf"\s+siambench {name} (.*)$", line)
        if match:
            found.append(shlex.split(match.group(1), comments=True))
    for action in parser._actions:
        if action.dest == "opts" and action.help and "e.g. " in action.help:
            found.append(BASE_ARGV.get(name, []) + action.help.split("e.g. ", 1)[1].split())
    return found


def _run_example(name: str, argv: list[str], parser: argparse.ArgumentParser, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    import siambench.pretrain.utils.config as config

    monkeypatch.chdir(tmp_path)
    for i, token in enumerate(argv):  # inputs the example names: placeholders, never read by planning
        if token.endswith(INPUT_SUFFIXES) and (i == 0 or argv[i - 1] != "MODEL.WEIGHTS") and not Path(token).exists():
            Path(token).parent.mkdir(parents=True, exist_ok=True)
            Path(token).write_bytes(b"placeholder")
    options = {s for a in parser._actions for s in a.option_strings}
    if "--dry-run" in options:
        if "--dry-run" not in argv:
            argv = ["--dry-run", *argv]
        assert importlib.import_module(cli.COMMANDS[name][0]).main(argv) in (0, None)
        return
    merge = config.merge_overrides

    def merge_then_stop(cfg: object, opts: list[str]) -> None:
        merge(cfg, opts)  # an unknown key raises ConfigError here
        raise _Reached

    if any(a.dest == "opts" for a in parser._actions):
        monkeypatch.setattr(config, "merge_overrides", merge_then_stop)
    else:
        original = argparse.ArgumentParser.parse_args

        def parse_then_stop(self: argparse.ArgumentParser, args: object = None, namespace: object = None) -> None:
            original(self, args, namespace)
            raise _Reached

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Reached):
        importlib.import_module(cli.COMMANDS[name][0]).main(argv)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_help_example_runs_as_written(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser_of(name, monkeypatch)
    examples = _examples(name, parser)
    for k, argv in enumerate(examples):
        work = tmp_path / f"example{k}"
        work.mkdir()
        try:
            _run_example(name, list(argv), parser, work, monkeypatch)
        except (Exception, SystemExit) as e:
            raise AssertionError(f"`siambench {name} {shlex.join(argv)}` (from --help) fails: "
                                 f"{type(e).__name__}: {e}; {capsys.readouterr().err[-500:]}") from e


def test_the_help_examples_are_found() -> None:
    """The collector above is not vacuous: the documented examples are seen."""
    mp = pytest.MonkeyPatch()
    try:
        found = {name: _examples(name, _parser_of(name, mp)) for name in ("convert", "transfer", "knn", "pretrain")}
    finally:
        mp.undo()
    assert len(found["convert"]) >= 5
    assert ["MODEL.WEIGHTS", "runs/pretrain/model_final.pth", "OUTPUT_DIR", "runs/x", "KNN.K", "20"] in found["knn"]
    assert any("SOLVER.MAX_ITER" in argv for argv in found["transfer"])


@pytest.mark.parametrize("name", sorted(n for n in cli.COMMANDS if n not in ("doctor", "data", "convert",
                                                                              "table", "report", "status", "cancel")))
def test_config_file_is_optional_everywhere(name: str) -> None:
    parser = _parser_of(name, pytest.MonkeyPatch())
    if name == "run":
        return  # the pipeline file is its positional argument
    (action,) = [a for a in parser._actions if "--config-file" in a.option_strings]
    assert not action.required


def test_transfer_accepts_detectron2s_resume_flag(tmp_path: Path) -> None:
    from siambench.transfer.main import build_parser

    args = build_parser().parse_args(["--task", "voc07", "--weights", "w.pkl", "--resume", "OUTPUT_DIR", "x"])
    assert args.resume and args.opts == ["OUTPUT_DIR", "x"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from siambench.pretrain.utils.env import siambench_version

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"siambench {siambench_version()}"


def test_report_writes_where_out_says(tmp_path: Path, synth_runs: Path) -> None:
    from siambench.benchmarks.report.report import main

    out = tmp_path / "elsewhere"
    assert main([str(synth_runs), "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert not (synth_runs / "report.md").exists() and not (synth_runs / "plots").exists()  # RUNS_DIR untouched
    links = re.findall(r"\]\((plots/[^)]+)\)", (out / "report.md").read_text())
    assert links and all((out / link).is_file() for link in links)
