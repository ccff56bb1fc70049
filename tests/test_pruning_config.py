"""The shared flags and PruningConfig."""
import argparse
import json

import pytest
import torch

from llava.pruning import DEFAULT_OPTIONS, METHODS, PruningConfig, add_pruning_args, select_visual_tokens

FLAGS = ["--pruning-method", "--visual-token-num", "--erank-avg", "--tau-max", "--tau-step", "--important-ratio",
         "--attention-share", "--complexity-rule", "--fastv-layer", "--budget-scope", "--pruning-stats",
         "--share-slope", "--share-min", "--share-max", "--pruning-seed"]


def parser():
    return add_pruning_args(argparse.ArgumentParser())


def parse(argv):
    return PruningConfig.from_args(parser().parse_args(argv))


def test_every_shared_flag_has_help_and_the_choices_are_listed():
    p = parser()
    text = p.format_help()
    for flag in FLAGS:
        assert flag in text
    actions = {a.option_strings[0]: a for a in p._actions if a.option_strings}
    for flag in FLAGS:
        assert actions[flag].help, flag
    assert set(actions["--pruning-method"].choices) == set(METHODS)
    assert tuple(actions["--complexity-rule"].choices) == ("fixed", "adaptive", "inverse")
    assert tuple(actions["--budget-scope"].choices) == ("per-view", "global")


def test_flags_build_the_config():
    cfg = parse(["--pruning-method", "mix", "--visual-token-num", "64", "--attention-share", "0.25",
                 "--complexity-rule", "adaptive", "--erank-avg", "95", "--budget-scope", "global", "--pruning-stats",
                 "--tau-max", "0.3", "--tau-step", "0.02", "--important-ratio", "0.75", "--fastv-layer", "3",
                 "--share-slope", "0.5", "--share-min", "0.2", "--share-max", "0.8", "--pruning-seed", "7"])
    assert (cfg.method, cfg.visual_token_num, cfg.attention_share, cfg.complexity_rule) == ("mix", 64, 0.25, "adaptive")
    assert cfg.erank_avg == 95 and cfg.budget_scope == "global" and cfg.pruning_stats and cfg.is_active
    assert (cfg.tau_max, cfg.tau_step, cfg.important_ratio, cfg.fastv_layer) == (0.3, 0.02, 0.75, 3)
    assert (cfg.share_slope, cfg.share_min, cfg.share_max, cfg.seed) == (0.5, 0.2, 0.8, 7)
    assert cfg.options() == {"erank_avg": 95, "tau_max": 0.3, "tau_step": 0.02, "important_ratio": 0.75,
                             "attention_share": 0.25, "complexity_rule": "adaptive", "share_slope": 0.5,
                             "share_min": 0.2, "share_max": 0.8, "seed": 7}


def test_defaults_mean_no_pruning_with_the_papers_constants():
    cfg = parse([])
    assert not cfg.is_active and cfg.method == "none" and cfg.visual_token_num is None
    assert (cfg.erank_avg, cfg.tau_max, cfg.tau_step) == (90, 0.25, 0.01)
    assert cfg.complexity_rule == "fixed" and cfg.budget_scope == "per-view" and cfg.fastv_layer == 2
    assert cfg == PruningConfig().validate() and cfg.options() == DEFAULT_OPTIONS


def test_config_round_trips_through_a_checkpoint_json():
    cfg = PruningConfig(method="agile", visual_token_num=64, erank_avg=88.5, pruning_stats=True).validate()
    assert PruningConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown pruning settings \\['tau'\\]"):
        PruningConfig.from_dict({**cfg.to_dict(), "tau": 0.1})


def test_options_drive_select_visual_tokens():
    cfg = parse(["--pruning-method", "vispruner", "--visual-token-num", "16", "--complexity-rule", "inverse"])
    feats, attn = torch.randn(1, 64, 8), torch.rand(1, 64)
    assert select_visual_tokens(cfg.method, feats, attn, cfg.visual_token_num, **cfg.options()).shape == (1, 16)
    assert cfg.needs_attention and not PruningConfig(method="divprune", visual_token_num=8).needs_attention


@pytest.mark.parametrize("argv,match", [
    (["--pruning-method", "agile"], "--visual-token-num is required"),
    (["--pruning-method", "agile", "--visual-token-num", "0"], "--visual-token-num must be a positive integer"),
    (["--pruning-method", "agile", "--visual-token-num", "-5"], "--visual-token-num"),
    (["--pruning-method", "mix", "--visual-token-num", "64", "--attention-share", "2"], "--attention-share must be in"),
    (["--pruning-method", "vispruner", "--visual-token-num", "64", "--important-ratio", "-0.1"], "--important-ratio"),
    (["--pruning-method", "agile", "--visual-token-num", "64", "--erank-avg", "0"], "--erank-avg must be > 0"),
    (["--pruning-method", "agile", "--visual-token-num", "64", "--tau-max", "0"], "--tau-max must be > 0"),
    (["--pruning-method", "agile", "--visual-token-num", "64", "--tau-step", "-1"], "--tau-step must be > 0"),
    (["--pruning-method", "fastv", "--visual-token-num", "64", "--fastv-layer", "-1"], "--fastv-layer"),
    (["--share-min", "0.9", "--share-max", "0.1"], "--share-min"),
    (["--share-slope", "-1"], "--share-slope"),
])
def test_bad_values_name_the_flag(argv, match):
    with pytest.raises(ValueError, match=match) as e:
        parse(argv)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field,value,match", [
    ("method", "magic", "--pruning-method: unknown method 'magic'; choose from agile"),
    ("visual_token_num", 6.5, "--visual-token-num"),
    ("complexity_rule", "odd", "--complexity-rule must be one of fixed, adaptive, inverse"),
    ("budget_scope", "all", "--budget-scope must be one of per-view, global"),
    ("erank_avg", "90", "--erank-avg must be a number"),
    ("seed", 1.5, "--pruning-seed must be an integer"),
])
def test_bad_fields_name_the_flag(field, value, match):
    with pytest.raises(ValueError, match=match):
        PruningConfig(**{field: value}).validate()


def test_unknown_method_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse(["--pruning-method", "magic"])
    assert "magic" in capsys.readouterr().err
