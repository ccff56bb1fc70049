"""The shared flags and PruningConfig."""
import argparse
import json

import pytest
import torch

from llava.pruning import DEFAULT_OPTIONS, METHODS, OPTIONS, PruningConfig, add_pruning_args, select_visual_tokens

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
                 "--share-slope", "0.5", "--share-min", "0.2", "--share-max", "0.8"])
    assert (cfg.method, cfg.visual_token_num, cfg.attention_share, cfg.complexity_rule) == ("mix", 64, 0.25, "adaptive")
    assert cfg.erank_avg == 95 and cfg.budget_scope == "global" and cfg.pruning_stats and cfg.is_active
    assert (cfg.share_slope, cfg.share_min, cfg.share_max) == (0.5, 0.2, 0.8)
    # the method receives its own options only
    assert cfg.options() == {"attention_share": 0.25, "erank_avg": 95, "complexity_rule": "adaptive",
                             "share_slope": 0.5, "share_min": 0.2, "share_max": 0.8}
    agile = parse(["--pruning-method", "agile", "--visual-token-num", "64", "--tau-max", "0.3", "--tau-step", "0.02"])
    assert agile.options() == {"erank_avg": 90.0, "tau_max": 0.3, "tau_step": 0.02}
    assert parse(["--pruning-method", "fastv", "--visual-token-num", "8", "--fastv-layer", "3"]).options() == \
        {"fastv_layer": 3}
    assert parse(["--pruning-method", "random", "--visual-token-num", "8", "--pruning-seed", "7"]).options() == \
        {"seed": 7}


def test_an_option_the_method_does_not_take_is_refused():
    """A run does what it says: --tau-max with fastervlm would otherwise be silently ignored."""
    with pytest.raises(ValueError, match="--tau-max does not apply to --pruning-method fastervlm "
                                         r"\(it is an option of agile\)"):
        parse(["--pruning-method", "fastervlm", "--visual-token-num", "8", "--tau-max", "0.3"])
    with pytest.raises(ValueError, match="--erank-avg does not apply to --pruning-method divprune"):
        PruningConfig(method="divprune", visual_token_num=8, erank_avg=50.0).validate()


def test_the_flags_and_fields_come_from_the_method_declarations():
    parser = add_pruning_args(argparse.ArgumentParser())
    flags = {a.dest: a for a in parser._actions}
    for name, option in OPTIONS.items():
        assert flags[name].option_strings == [option.flag_name] and flags[name].default == option.default
        assert getattr(PruningConfig(), name) == option.default
        assert any(name in spec.option_names for spec in METHODS.values())


def test_defaults_mean_no_pruning_with_the_papers_constants():
    cfg = parse([])
    assert not cfg.is_active and cfg.method == "none" and cfg.visual_token_num is None
    assert (cfg.erank_avg, cfg.tau_max, cfg.tau_step) == (90, 0.25, 0.01)
    assert cfg.complexity_rule == "fixed" and cfg.budget_scope == "per-view" and cfg.fastv_layer == 2
    assert cfg == PruningConfig().validate() and cfg.options() == {}
    assert DEFAULT_OPTIONS == {name: option.default for name, option in OPTIONS.items()}


def test_config_round_trips_through_a_checkpoint_json():
    cfg = PruningConfig(method="agile", visual_token_num=64, erank_avg=88.5, pruning_stats=True).validate()
    assert PruningConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown pruning settings \\['tau'\\]"):
        PruningConfig.from_dict({**cfg.to_dict(), "tau": 0.1})


def test_options_drive_select_visual_tokens():
    cfg = parse(["--pruning-method", "vispruner", "--visual-token-num", "16", "--complexity-rule", "inverse",
                 "--vispruner-similarity", "projected"])
    feats, attn = torch.randn(1, 64, 8), torch.rand(1, 64)
    assert select_visual_tokens(cfg.method, feats, attn, cfg.visual_token_num, **cfg.options()).shape == (1, 16)
    assert cfg.needs_attention and not PruningConfig(method="divprune", visual_token_num=8).needs_attention


@pytest.mark.parametrize("argv,match", [
    (["--pruning-method", "agile"], "--visual-token-num is required"),
    (["--pruning-method", "agile", "--visual-token-num", "0"], "--visual-token-num must be a positive integer"),
    (["--pruning-method", "agile", "--visual-token-num", "-5"], "--visual-token-num"),
    (["--pruning-method", "mix", "--visual-token-num", "64", "--attention-share", "2"], "--attention-share must be <= 1.0"),
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


@pytest.mark.parametrize("name,table", [("methods", "methods_markdown"), ("flags", "flags_markdown")])
def test_the_readme_tables_are_the_declarations(name, table):
    """The README's method and flag tables are generated; after changing a method's declaration, paste
    `python -c "from llava.pruning import config; print(config.<table>())"` between the markers."""
    import pathlib

    from llava.pruning import config

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    begin, end = f"<!-- {name}-table:begin -->\n", f"\n<!-- {name}-table:end -->"
    assert begin in readme and end in readme, f"README.md has no {name} table markers"
    shown = readme.split(begin, 1)[1].split(end, 1)[0]
    assert shown == getattr(config, table)(), f"README's {name} table is stale: regenerate it with config.{table}()"
