"""``siambench transfer``'s KEY VALUE overrides are read once, by key, as yacs merges them."""
from __future__ import annotations

import pytest

from siambench.pretrain.utils.config import ConfigError
from siambench.transfer.config import load_task_config, overrides, task_config_path
from siambench.transfer.main import build_parser, make_plan


def test_overrides_by_key_last_value_wins_and_separator_dropped() -> None:
    assert overrides(["--", "SOLVER.BASE_LR", "0.1", "SEED", "3", "SOLVER.BASE_LR", "0.2"]) == \
        {"SOLVER.BASE_LR": "0.2", "SEED": "3"}
    assert overrides([]) == {}


def test_an_explicit_base_lr_given_twice_is_kept_as_merged() -> None:
    """A base lr given on the command line (even twice) is not rescaled by the batch rule."""
    cfg, scaling = load_task_config(task_config_path("synth_voc07"),
                                    ["SOLVER.BASE_LR", "0.5", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.25"])
    assert cfg.SOLVER.BASE_LR == 0.25 and not scaling.lr_scaled


@pytest.mark.parametrize("opts, match", [(["MODEL.WEIGHTS", "other.pkl"], "contradicts --weights"),
                                         (["MODEL.WEIGHTS", "x.pkl", "MODEL.WEIGHTS", "''"], "MODEL.WEIGHTS ''")])
def test_a_model_weights_override_that_contradicts_weights_is_refused(tmp_path, opts, match) -> None:
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"x")
    args = build_parser().parse_args(["--task", "synth_voc07", "--weights", str(weights), "--dry-run", *opts])
    with pytest.raises(ConfigError, match=match):
        make_plan(args, cuda_available=False)
