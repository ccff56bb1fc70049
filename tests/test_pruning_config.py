"""The shared flags and PruningConfig."""
import argparse

import pytest

from llava.pruning import PruningConfig, add_pruning_args

FLAGS = ["--pruning-method", "--visual-token-num", "--erank-avg", "--tau-max", "--tau-step", "--important-ratio",
         "--attention-share", "--complexity-rule", "--fastv-layer", "--budget-scope", "--pruning-stats"]


def parse(argv):
    return PruningConfig.from_args(add_pruning_args(argparse.ArgumentParser()).parse_args(argv))


def test_every_shared_flag_is_in_help():
    text = add_pruning_args(argparse.ArgumentParser()).format_help()
    for flag in FLAGS:
        assert flag in text


def test_flags_build_the_config():
    cfg = parse(["--pruning-method", "mix", "--visual-token-num", "64", "--attention-share", "0.25",
                 "--complexity-rule", "adaptive", "--erank-avg", "95", "--budget-scope", "global", "--pruning-stats"])
    assert (cfg.method, cfg.visual_token_num, cfg.attention_share, cfg.complexity_rule) == ("mix", 64, 0.25, "adaptive")
    assert cfg.erank_avg == 95 and cfg.budget_scope == "global" and cfg.pruning_stats and cfg.is_active
    assert cfg.options()["attention_share"] == 0.25
    assert PruningConfig.from_dict(cfg.to_dict()) == cfg


def test_defaults_mean_no_pruning():
    cfg = parse([])
    assert not cfg.is_active and cfg.method == "none" and cfg.erank_avg == 90 and cfg.tau_max == 0.25


@pytest.mark.parametrize("argv,match", [
    (["--pruning-method", "agile"], "visual-token-num"),
    (["--pruning-method", "agile", "--visual-token-num", "0"], "visual-token-num"),
    (["--pruning-method", "agile", "--visual-token-num", "64", "--attention-share", "2"], "attention-share"),
    (["--pruning-method", "agile", "--visual-token-num", "64", "--erank-avg", "0"], "erank-avg"),
])
def test_bad_values_name_the_flag(argv, match):
    with pytest.raises(ValueError, match=match):
        parse(argv)


def test_unknown_method_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse(["--pruning-method", "magic"])
    assert "magic" in capsys.readouterr().err
