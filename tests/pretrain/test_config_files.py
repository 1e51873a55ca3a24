"""Config files: bad YAML is one line naming the file, a _BASE_ not next to its file is the shipped one,
and every command with overrides takes its flags anywhere."""
from __future__ import annotations

from pathlib import Path

import pytest

from siambench.benchmarks import cli
from siambench.pretrain.config import get_cfg
from siambench.pretrain.utils.config import ConfigError, base_chain, load_config
from siambench.pretrain.utils.paths import CONFIG_ROOT


@pytest.mark.parametrize("text, match", [
    ("", "the config file is empty"),
    ("# only a comment\n", "the config file is empty"),
    ("- SOLVER.EPOCHS\n- 2\n", "holds a YAML list, not a mapping"),
    ("SOLVER: [1\n", "not valid YAML at line 2"),
])
def test_bad_yaml_is_one_line_naming_the_file_and_creates_nothing(text: str, match: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(get_cfg(), bad)
    out = tmp_path / "out"
    assert cli.main(["pretrain", "--config-file", str(bad), "OUTPUT_DIR", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and match in err
    assert not out.exists()


def test_a_bad_base_is_named_too(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("[1, 2]\n")
    (tmp_path / "top.yaml").write_text("_BASE_: base.yaml\nSEED: 1\n")
    with pytest.raises(ConfigError, match=r"base.yaml: the file holds a YAML list"):
        load_config(get_cfg(), tmp_path / "top.yaml")
    (tmp_path / "top.yaml").write_text("_BASE_: nowhere.yaml\nSEED: 1\n")
    with pytest.raises(ConfigError, match=r"top.yaml: _BASE_ nowhere.yaml not found"):
        load_config(get_cfg(), tmp_path / "top.yaml")


def test_a_base_not_next_to_the_file_falls_back_to_the_shipped_configs(tmp_path: Path) -> None:
    shipped = CONFIG_ROOT / "pretrain" / "synth_r18.yaml"
    copy = tmp_path / "configs" / "pretrain" / "mine.yaml"  # a copy of synth_simclr_r18.yaml, without its base
    copy.parent.mkdir(parents=True)
    copy.write_text((CONFIG_ROOT / "pretrain" / "synth_simclr_r18.yaml").read_text())
    assert load_config(get_cfg(), copy) == load_config(get_cfg(), CONFIG_ROOT / "pretrain" / "synth_simclr_r18.yaml")
    assert [p.resolve() for p in base_chain(copy)][1] == shipped.resolve()
    named = tmp_path / "named.yaml"  # spelled as --config-file takes it
    named.write_text("_BASE_: configs/pretrain/synth_r18.yaml\nSEED: 5\n")
    assert load_config(get_cfg(), named).SEED == 5 and base_chain(named)[1].resolve() == shipped.resolve()
    unique = tmp_path / "unique.yaml"  # only one shipped folder holds it
    unique.write_text("_BASE_: Base-Synth-C4.yaml\n")
    assert base_chain(unique)[1].resolve() == (CONFIG_ROOT / "transfer" / "Base-Synth-C4.yaml").resolve()


def test_a_list_of_bases_merges_in_fvcores_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("SEED: 1\nSOLVER:\n  EPOCHS: 3\n")
    (tmp_path / "b.yaml").write_text("SEED: 2\n")
    (tmp_path / "top.yaml").write_text("_BASE_: [a.yaml, b.yaml]\nSOLVER:\n  BASE_LR: 0.5\n")
    cfg = load_config(get_cfg(), tmp_path / "top.yaml")
    assert (cfg.SEED, cfg.SOLVER.EPOCHS, cfg.SOLVER.BASE_LR) == (2, 3, 0.5)
    assert {p.name for p in base_chain(tmp_path / "top.yaml")} == {"top.yaml", "a.yaml", "b.yaml"}


def _commands_with_overrides() -> list[str]:
    import argparse
    import importlib

    found = []
    for name, (module, _) in cli.COMMANDS.items():
        seen: list[argparse.ArgumentParser] = []

        def capture(self: argparse.ArgumentParser, *a: object, **k: object) -> None:
            seen.append(self)
            raise SystemExit(0)

        mp = pytest.MonkeyPatch()
        mp.setattr(argparse.ArgumentParser, "parse_args", capture)
        mp.setattr(argparse.ArgumentParser, "parse_intermixed_args", capture)
        try:
            importlib.import_module(module).main([])
        except SystemExit:
            pass
        finally:
            mp.undo()
        if seen and any(a.dest == "opts" for a in seen[0]._actions):
            found.append(name)
    return found


def test_every_command_with_overrides_takes_flags_after_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands_with_overrides()
    assert {"pretrain", "supervised", "lincls", "knn", "transfer", "run"} <= set(commands)
    missing = tmp_path / "missing.yaml"
    for name in commands:
        out = tmp_path / name
        first = ["configs/benchmarks/demo.yaml"] if name == "run" else []
        flag = "--dry-run" if name == "run" else "--config-file"
        more = ["--weights", "scratch"] if name == "transfer" else []
        argv = [name, *first, "OUTPUT_DIR", str(out), *more, flag, *([] if name == "run" else [str(missing)])]
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert "Non-existent" not in err and "bad override" not in err, (name, err)
        if name != "run":  # the flag was read as a flag: its file is looked for
            assert rc == 2 and "missing.yaml" in err and not out.exists(), (name, err)


def test_bad_pipeline_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "pipe.yaml"
    for text, match in (("", "is empty"), ("- a\n", "holds a YAML list")):
        bad.write_text(text)
        assert cli.main(["run", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err and match in err, err


def test_pretrain_resume_after_the_overrides() -> None:
    from siambench.pretrain.main import parse_args

    args = parse_args(["OUTPUT_DIR", "x", "--resume", "auto", "SOLVER.EPOCHS", "2"])
    assert args.resume == "auto" and args.opts == ["OUTPUT_DIR", "x", "SOLVER.EPOCHS", "2"]
