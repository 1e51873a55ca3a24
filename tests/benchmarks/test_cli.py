"""The `siambench` dispatcher: every subcommand resolves, bad input is one clean line."""
import importlib

import pytest

from siambench.benchmarks import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_has_a_main(name):
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.main)


def test_unknown_command_exits_2(capsys):
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_config_error_is_one_line_not_a_traceback(capsys, tmp_path):
    rc = cli.main(["knn", "--config-file", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing.yaml" in err and "Traceback" not in err


def test_debug_env_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("SIAMBENCH_DEBUG", "1")
    from siambench.pretrain.utils.config import ConfigError

    with pytest.raises(ConfigError):
        cli.main(["knn", "--config-file", str(tmp_path / "missing.yaml")])
