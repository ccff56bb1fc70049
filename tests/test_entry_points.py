"""Every command-line entry point's --help: the usage line names the real command, the description is whole
sentences, every flag says what it is, defaults are shown once, and renamed flags keep their old spellings."""
import argparse
import importlib

import pytest

ENTRY_POINTS = [
    # chat, serving and the demo
    "llava.serve.cli",
    "llava.serve.controller",
    "llava.serve.model_worker",
    "llava.serve.gradio_web_server",
    "llava.serve.test_message",
    "llava.serve.register_worker",
    "llava.serve.load_test",
    "llava.serve.demo_web",
    "llava.demo",
    # scorers and converters
    "llava.eval.chair",
    "llava.eval.convert_answer_to_mme",
    "llava.eval.convert_gqa_for_eval",
    "llava.eval.convert_mmbench_for_submission",
    "llava.eval.convert_mmvet_for_eval",
    "llava.eval.convert_seed_for_submission",
    "llava.eval.convert_vizwiz_for_submission",
    "llava.eval.convert_vqav2_for_submission",
    "llava.eval.eval_gqa",
    "llava.eval.eval_mme",
    "llava.eval.eval_pope",
    "llava.eval.eval_science_qa",
    "llava.eval.eval_textvqa",
    "llava.eval.fixtures",
    "llava.eval.summarize",
    # generators (their shared flags come from llava.eval.common.eval_parser)
    "llava.eval.model_vqa",
    "llava.eval.model_vqa_loader",
    "llava.eval.model_vqa_science",
    "llava.eval.model_vqa_mmbench",
    "llava.eval.model_caption",
    # benchmarks and pruning tools
    "llava.tools.benchmark",
    "llava.tools.bench",
    "llava.tools.bench_select",
    "llava.tools.calibrate",
    "llava.tools.visualize",
    # testbed
    "llava.testbed.base",
    "llava.testbed.generate",
    "llava.testbed.report",
    "llava.testbed.score",
    "llava.testbed.ship",
    "llava.testbed.tower",
    # fixtures for tests and smoke runs
    "llava.tools.make_tiny_checkpoint",
    "llava.train.make_tiny_dataset",
]


def parser_of(module):
    return importlib.import_module(module).build_parser()


def flags(parser):
    """Every action but -h/--help."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def name(action):
    return "/".join(action.option_strings) or action.dest


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_usage_names_the_command(module):
    parser = parser_of(module)
    assert parser.prog == f"python -m {module}"
    assert parser.format_usage().startswith(f"usage: python -m {module} ")


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_description_is_whole_sentences(module):
    description = parser_of(module).description
    assert description and description.strip() == description
    assert description.endswith((".", ":", ")")), description
    assert "\n" not in description


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_flag_has_help(module):
    parser = parser_of(module)
    missing = [name(a) for a in flags(parser) if not (a.help or "").strip()]
    assert not missing, f"{module}: no help for {', '.join(missing)}"
    parser.format_help()  # and every help text formats (no stray %)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_defaults_are_shown_once(module):
    """The formatter appends "(default: X)"; a hand-written one next to it would say it twice."""
    parser = parser_of(module)
    twice = [name(a) for a in flags(parser) if a.option_strings and a.default not in (None, False, argparse.SUPPRESS)
             and "default" in (a.help or "")]
    assert not twice, f"{module}: default written by hand in the help of {', '.join(twice)}"


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_hyphenated_spelling_comes_first(module):
    """Upstream's underscore spellings stay as aliases, listed after the hyphenated one."""
    parser = parser_of(module)
    first = [a.option_strings[0] for a in flags(parser) if a.option_strings]
    assert not [f for f in first if "_" in f], module


@pytest.mark.parametrize("module, new, old", [
    ("llava.tools.bench", ["--visual-token-num", "16", "--dim", "32"], ["--k", "16", "--d", "32"]),
    ("llava.tools.bench_select", ["--visual-token-num", "16", "--dim", "32", "--batch-size", "2"],
     ["--k", "16", "--d", "32", "--batch", "2"]),
    ("llava.testbed.score", ["vqa", "--result-file", "a.jsonl", "--pruning-method", "agile", "--visual-token-num", "64"],
     ["vqa", "--result-file", "a.jsonl", "--method", "agile", "--k", "64"]),
    ("llava.eval.eval_mme", ["--results-dir", "r"], ["--results_dir", "r"]),
    ("llava.tools.visualize", ["--model-path", "m", "--image-file", "i", "--methods", "agile,divprune"],
     ["--model-path", "m", "--image-file", "i", "--pruning-method", "agile,divprune"]),
])
def test_old_spellings_still_parse(module, new, old):
    parser = parser_of(module)
    assert vars(parser.parse_args(new)) == vars(parser.parse_args(old))


@pytest.mark.parametrize("module, canonical, alias", [
    ("llava.tools.bench", "--visual-token-num", "--k"),
    ("llava.tools.bench", "--dim", "--d"),
    ("llava.tools.bench_select", "--visual-token-num", "--k"),
    ("llava.tools.bench_select", "--dim", "--d"),
    ("llava.testbed.score", "--pruning-method", "--method"),
    ("llava.testbed.score", "--visual-token-num", "--k"),
])
def test_canonical_spelling_is_listed_first(module, canonical, alias):
    action = next(a for a in flags(parser_of(module)) if canonical in a.option_strings)
    assert action.option_strings == [canonical, alias]


def test_progress_stays_off_stderr_when_it_is_not_a_terminal(capsys):
    """tqdm with disable=None: no bar when stderr is not a TTY (here: captured), so logs stay clean."""
    from llava.tools import bench_select

    bench_select.main(["--n", "48", "--visual-token-num", "8", "--dim", "16", "--repeats", "1", "--device", "cpu",
                       "--regimes", "noise"])
    captured = capsys.readouterr()
    assert "| agile |" in captured.out and captured.err == ""
