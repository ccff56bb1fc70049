"""One pruning configuration, built from one shared set of flags (CLI, eval, training, benchmarks)."""
import argparse
from dataclasses import asdict, dataclass, fields
from typing import Optional

from .registry import COMPLEXITY_RULES, DEFAULT_OPTIONS, METHODS
from . import select as _select  # noqa: F401 (every method is registered before the flags list them)

BUDGET_SCOPES = ("per-view", "global")


def _flag(name):
    return "--" + {"method": "pruning-method", "seed": "pruning-seed"}.get(name, name.replace("_", "-"))


@dataclass
class PruningConfig:
    """Everything that decides which visual tokens reach the LLM. Saved into a checkpoint's config.json
    with to_dict() and read back with from_dict(); options() gives select_visual_tokens' keywords."""

    method: str = "none"
    visual_token_num: Optional[int] = None  # K visual embeddings per image (per view with per-view scope)
    erank_avg: float = DEFAULT_OPTIONS["erank_avg"]
    tau_max: float = DEFAULT_OPTIONS["tau_max"]
    tau_step: float = DEFAULT_OPTIONS["tau_step"]
    important_ratio: float = DEFAULT_OPTIONS["important_ratio"]
    attention_share: float = DEFAULT_OPTIONS["attention_share"]
    complexity_rule: str = DEFAULT_OPTIONS["complexity_rule"]
    share_slope: float = DEFAULT_OPTIONS["share_slope"]
    share_min: float = DEFAULT_OPTIONS["share_min"]
    share_max: float = DEFAULT_OPTIONS["share_max"]
    seed: int = DEFAULT_OPTIONS["seed"]
    fastv_layer: int = 2
    budget_scope: str = "per-view"
    pruning_stats: bool = False

    @property
    def is_active(self):
        """A pruning method is on (it may still keep everything when K >= the tokens available)."""
        return self.method != "none"

    @property
    def needs_attention(self):
        return self.is_active and METHODS[self.method].needs_attention

    def validate(self):
        """Check every field; a bad one raises ValueError naming its flag. Returns self."""
        if self.method not in METHODS:
            raise ValueError(f"--pruning-method: unknown method {self.method!r}; "
                             f"choose from {', '.join(sorted(METHODS))}")
        k = self.visual_token_num
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
            raise ValueError(f"--visual-token-num must be a positive integer, got {k!r}")
        if self.is_active and k is None:
            raise ValueError(f"--visual-token-num is required with --pruning-method {self.method}")
        if self.complexity_rule not in COMPLEXITY_RULES:
            raise ValueError(f"--complexity-rule must be one of {', '.join(COMPLEXITY_RULES)}, "
                             f"got {self.complexity_rule!r}")
        if self.budget_scope not in BUDGET_SCOPES:
            raise ValueError(f"--budget-scope must be one of {', '.join(BUDGET_SCOPES)}, got {self.budget_scope!r}")
        for name in ("fastv_layer", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (name == "fastv_layer" and value < 0):
                raise ValueError(f"{_flag(name)} must be a{' non-negative' if name == 'fastv_layer' else 'n'} "
                                 f"integer, got {value!r}")
        for name in ("erank_avg", "tau_max", "tau_step", "important_ratio", "attention_share", "share_slope",
                     "share_min", "share_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{_flag(name)} must be a number, got {value!r}")
        for name in ("erank_avg", "tau_max", "tau_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{_flag(name)} must be > 0, got {getattr(self, name)}")
        for name in ("important_ratio", "attention_share", "share_min", "share_max"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{_flag(name)} must be in [0, 1], got {getattr(self, name)}")
        if self.share_min > self.share_max:
            raise ValueError(f"--share-min ({self.share_min}) must not exceed --share-max ({self.share_max})")
        if not self.share_slope >= 0:
            raise ValueError(f"--share-slope must be >= 0 (--complexity-rule inverse flips the sign), "
                             f"got {self.share_slope}")
        if not isinstance(self.pruning_stats, bool):
            raise ValueError(f"--pruning-stats must be true or false, got {self.pruning_stats!r}")
        return self

    def options(self):
        """The keyword options of select_visual_tokens / prune_visual_tokens."""
        return {name: getattr(self, name) for name in DEFAULT_OPTIONS}

    def to_dict(self):
        return asdict(self)

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


def add_pruning_args(parser):
    """Add the shared pruning flags to an argparse parser (same names and meaning in every entry point).
    The namespace also records which of them were given (flags_given), so a run can tell a flag from a
    default and say where each setting came from."""
    g = parser.add_argument_group("visual token pruning")
    g.add_argument("--pruning-method", action=_Store, dest="method", default="none", choices=sorted(METHODS),
                   help="how visual tokens are chosen: none (keep all), agile (AgilePruner), fastervlm, divprune, "
                        "fps, vispruner, mix (FasterVLM + DivPrune), visionzip (merges), random; fastv prunes "
                        "inside the LLM")
    g.add_argument("--visual-token-num", action=_Store, type=int, default=None,
                   help="K: visual embeddings fed to the LLM per image (per view with --budget-scope per-view); "
                        "K >= the tokens available means no pruning")
    g.add_argument("--erank-avg", action=_Store, type=float, default=DEFAULT_OPTIONS["erank_avg"],
                   help="agile and the adaptive/inverse rules: reference effective rank (90 for LLaVA-1.5-7B; "
                        "python -m llava.pruning.calibrate for other models)")
    g.add_argument("--tau-max", action=_Store, type=float, default=DEFAULT_OPTIONS["tau_max"],
                   help="agile: cap on the cosine-distance threshold")
    g.add_argument("--tau-step", action=_Store, type=float, default=DEFAULT_OPTIONS["tau_step"],
                   help="agile: threshold growth per attention rank, scaled by erank/erank-avg")
    g.add_argument("--important-ratio", action=_Store, type=float, default=DEFAULT_OPTIONS["important_ratio"],
                   help="vispruner: share of K chosen by attention, the rest by de-duplication "
                        "(R0 of the complexity rule)")
    g.add_argument("--attention-share", action=_Store, type=float, default=DEFAULT_OPTIONS["attention_share"],
                   help="mix: share R of K chosen by attention, the rest by DivPrune (R0 of the complexity rule)")
    g.add_argument("--complexity-rule", action=_Store, default=DEFAULT_OPTIONS["complexity_rule"],
                   choices=COMPLEXITY_RULES,
                   help="mix/vispruner: fixed R, adaptive (R falls as the image's erank rises) or inverse (ablation)")
    g.add_argument("--share-slope", action=_Store, type=float, default=DEFAULT_OPTIONS["share_slope"],
                   help="adaptive/inverse: R = clip(R0 -/+ slope * (erank/erank-avg - 1), share-min, share-max)")
    g.add_argument("--share-min", action=_Store, type=float, default=DEFAULT_OPTIONS["share_min"],
                   help="adaptive/inverse: lower clip of R")
    g.add_argument("--share-max", action=_Store, type=float, default=DEFAULT_OPTIONS["share_max"],
                   help="adaptive/inverse: upper clip of R")
    g.add_argument("--pruning-seed", action=_Store, dest="seed", type=int, default=DEFAULT_OPTIONS["seed"],
                   help="random: seed")
    g.add_argument("--fastv-layer", action=_Store, type=int, default=2,
                   help="fastv: decoder layer at which image tokens are pruned")
    g.add_argument("--budget-scope", action=_Store, default="per-view", choices=BUDGET_SCOPES,
                   help="LLaVA-1.6 anyres: K per view (per-view) or K over all views of an image (global)")
    g.add_argument("--pruning-stats", action=_StoreTrue,
                   help="record per image: erank of all and of kept tokens, attention entropy, kept indices, time")
    return parser


def parse_pruning_args(argv=None):
    return PruningConfig.from_args(add_pruning_args(argparse.ArgumentParser()).parse_args(argv))
