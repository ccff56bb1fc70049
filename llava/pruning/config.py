"""One pruning configuration, built from one shared set of flags (CLI, eval, training, benchmarks).

PruningConfig's fields and the flags are generated from the methods' declarations (registry.py): the
general fields (method, visual_token_num, budget_scope, pruning_stats) plus one field per declared option.
"""
import argparse
from dataclasses import asdict, field, fields, make_dataclass
from typing import Optional

from . import select as _select  # noqa: F401 (every method is registered before the fields and flags are made)
from .registry import METHODS, OPTIONS, STAGES, users_of

BUDGET_SCOPES = ("per-view", "global")


def _flag(name):
    if name in OPTIONS:
        return OPTIONS[name].flag_name
    return "--" + {"method": "pruning-method"}.get(name, name.replace("_", "-"))


class _PruningConfigMethods:
    """Everything that decides which visual tokens reach the LLM. Saved into a checkpoint's config.json
    with to_dict() and read back with from_dict(); options() gives the active method's own options."""

    @property
    def spec(self):
        """The active method's declaration (registry.Method)."""
        return METHODS[self.method]

    @property
    def stage(self):
        """Where the visual tokens are cut: none, pre-projector, post-projector or decoder."""
        return self.spec.stage if self.method in METHODS else "none"

    @property
    def is_active(self):
        """A pruning method is on (it may still keep everything when K >= the tokens available)."""
        return self.method != "none"

    @property
    def needs_attention(self):
        return self.is_active and self.spec.needs_attention

    def validate(self):
        """Check every field; a bad one raises ValueError naming its flag. An option the method does not take
        must keep its default (a run does what it says). Normalises values (e.g. lists to tuples). Returns self."""
        if self.method not in METHODS:
            raise ValueError(f"--pruning-method: unknown method {self.method!r}; "
                             f"choose from {', '.join(sorted(METHODS))}")
        spec = self.spec
        k = self.visual_token_num
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
            raise ValueError(f"--visual-token-num must be a positive integer, got {k!r}")
        own = spec.validate(self.options())
        if k is not None and callable(spec.k_optional) and spec.count_is_optional(own):
            raise ValueError(f"--visual-token-num and the options of --pruning-method {self.method} both set its token "
                             f"schedule; give one of them")
        if self.is_active and k is None and not spec.count_is_optional(own):
            raise ValueError(f"--visual-token-num is required with --pruning-method {self.method}"
                             + (" (or --pdrop-ratio)" if self.method == "pdrop" else ""))
        if self.budget_scope not in BUDGET_SCOPES:
            raise ValueError(f"--budget-scope must be one of {', '.join(BUDGET_SCOPES)}, got {self.budget_scope!r}")
        if not isinstance(self.pruning_stats, bool):
            raise ValueError(f"--pruning-stats must be true or false, got {self.pruning_stats!r}")
        for name, option in OPTIONS.items():
            value = option.check(getattr(self, name))
            object.__setattr__(self, name, value)
            if name not in spec.option_names and value != option.default:
                users = ", ".join(users_of(name))
                raise ValueError(f"{option.flag_name} does not apply to --pruning-method {self.method} "
                                 f"(it is an option of {users})")
        spec.validate(self.options())
        return self

    def options(self):
        """The active method's own options: {name: value} (what the method function receives)."""
        return {name: getattr(self, name) for name in self.spec.option_names}

    def non_defaults(self):
        """The options that differ from their defaults: {name: value}."""
        return {name: getattr(self, name) for name, o in OPTIONS.items() if getattr(self, name) != o.default}

    def to_dict(self):
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d):
        """From to_dict()'s output (e.g. a checkpoint's config.json); unknown keys are an error."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown pruning settings {sorted(unknown)}; "
                             f"known: {', '.join(f.name for f in fields(cls))}")
        return cls(**d).validate()

    @classmethod
    def from_args(cls, args):
        """From an argparse namespace built with add_pruning_args (other attributes are ignored)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}).validate()


def _make_config_class():
    specs = [("method", str, field(default="none")), ("visual_token_num", Optional[int], field(default=None))]
    specs += [(name, object, field(default=option.default)) for name, option in OPTIONS.items()]
    specs += [("budget_scope", str, field(default="per-view")), ("pruning_stats", bool, field(default=False))]
    cls = make_dataclass("PruningConfig", specs, bases=(_PruningConfigMethods,))
    cls.__module__ = __name__
    cls.__doc__ = _PruningConfigMethods.__doc__
    return cls


PruningConfig = _make_config_class()


GIVEN = "pruning_flags_given"  # the namespace attribute listing the pruning settings given on the command line


def _record(namespace, dest):
    given = set(getattr(namespace, GIVEN, ()))
    given.add(dest)
    setattr(namespace, GIVEN, given)


class _Recorded:
    """An argparse action that also records, in the namespace, that its flag was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _record(namespace, self.dest)


class _Store(_Recorded, argparse._StoreAction):
    pass


class _StoreTrue(_Recorded, argparse._StoreTrueAction):
    pass


def flags_given(args):
    """The PruningConfig fields whose flag was on the command line (the rest hold defaults)."""
    return set(getattr(args, GIVEN, ()))


def _method_help():
    by_stage = {stage: sorted(m for m, spec in METHODS.items() if spec.stage == stage) for stage in STAGES}
    return ("how visual tokens are chosen (none keeps all); before the projector: "
            f"{', '.join(by_stage['pre-projector'])}; after it: {', '.join(by_stage['post-projector'])}; inside the "
            f"LLM: {', '.join(by_stage['decoder'])} (README: Pruning methods)")


def add_pruning_args(parser):
    """Add the shared pruning flags to an argparse parser (same names and meaning in every entry point),
    one per option the methods declare. The namespace also records which of them were given
    (flags_given), so a run can tell a flag from a default and say where each setting came from."""
    g = parser.add_argument_group("visual token pruning")
    g.add_argument("--pruning-method", action=_Store, dest="method", default="none", choices=sorted(METHODS),
                   help=_method_help())
    g.add_argument("--visual-token-num", action=_Store, type=int, default=None,
                   help="K: visual embeddings fed to the LLM per image (per view with --budget-scope per-view; "
                        "on average over the decoder layers for multi-stage in-LLM methods); K >= the tokens "
                        "available means no pruning")
    for name, option in OPTIONS.items():
        kwargs = {"choices": option.choices} if option.choices else {}
        if option.kind is bool:
            kwargs["type"] = option.parse
        elif option.kind != "ints":
            kwargs["type"] = option.kind
        else:
            kwargs["type"] = option.parse
        g.add_argument(option.flag_name, action=_Store, dest=name, default=option.default,
                       help=option.help, **kwargs)
    g.add_argument("--budget-scope", action=_Store, default="per-view", choices=BUDGET_SCOPES,
                   help="LLaVA-1.6 anyres: K per view (per-view) or K over all views of an image (global)")
    g.add_argument("--pruning-stats", action=_StoreTrue,
                   help="record per image: erank of all and of kept tokens, attention entropy, kept indices, time")
    return parser


def parse_pruning_args(argv=None):
    return PruningConfig.from_args(add_pruning_args(argparse.ArgumentParser()).parse_args(argv))


# ---- the README's tables, generated from the declarations (tests/test_pruning_config.py keeps them in sync) -----
def _cell(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return f"`{value}`" if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def methods_markdown():
    """| method | stage | reads | options | what it does |, one row per registered method."""
    rows = ["| method | stage | reads | options | what it does |", "|---|---|---|---|---|"]
    for name in sorted(METHODS):
        spec = METHODS[name]
        reads = (["CLS attention"] if spec.needs_attention else []) + list(spec.inputs)
        reads = reads or (["the LLM's hidden states"] if spec.stage == "decoder" else [])
        options = ", ".join(f"`{o.flag_name}`" for o in spec.options) or "—"
        rows.append(f"| `{name}` | {spec.stage} | {', '.join(reads) or 'features'} | {options} | {spec.summary} |")
    return "\n".join(rows)


def flags_markdown():
    """| flag | default | methods | meaning |, one row per shared flag and per declared option."""
    rows = ["| flag | default | methods | meaning |", "|---|---|---|---|",
            "| `--pruning-method` | `none` | — | the method (table above) |",
            "| `--visual-token-num` | — | all | K, visual embeddings fed to the LLM per image (per view with "
            "`--budget-scope per-view`; on average over the decoder layers for multi-stage in-LLM methods) |"]
    for name, option in OPTIONS.items():
        choices = f" ({' / '.join(option.choices)})" if option.choices else ""
        rows.append(f"| `{option.flag_name}` | {_cell(option.default)} | {', '.join(users_of(name))} | "
                    f"{option.help}{choices} |")
    rows.append("| `--budget-scope` | `per-view` | before the LLM | LLaVA-1.6: K per view, or `global` (K over the "
                "whole image) |")
    rows.append("| `--pruning-stats` | off | all | record per image: erank of all and of kept tokens, attention "
                "entropy, kept indices, pruning time (`model.pruning_records`) |")
    return "\n".join(rows)
