"""One pruning configuration, built from one shared set of flags (CLI, eval, training, benchmarks)."""
import argparse
from dataclasses import asdict, dataclass, fields
from typing import Optional

from .methods import COMPLEXITY_RULES, DEFAULT_OPTIONS, METHODS

BUDGET_SCOPES = ("per-view", "global")


@dataclass
class PruningConfig:
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
        return self.method != "none"

    @property
    def needs_attention(self):
        return self.is_active and METHODS[self.method].needs_attention

    def validate(self):
        known = sorted(METHODS) + ["none"]
        if self.method not in known:
            raise ValueError(f"--pruning-method: unknown method {self.method!r}; choose from {', '.join(known)}")
        if self.is_active and (self.visual_token_num is None or self.visual_token_num <= 0):
            raise ValueError(f"--visual-token-num must be a positive integer with --pruning-method "
                             f"{self.method}, got {self.visual_token_num!r}")
        if self.complexity_rule not in COMPLEXITY_RULES:
            raise ValueError(f"--complexity-rule must be one of {COMPLEXITY_RULES}, got {self.complexity_rule!r}")
        if self.budget_scope not in BUDGET_SCOPES:
            raise ValueError(f"--budget-scope must be one of {BUDGET_SCOPES}, got {self.budget_scope!r}")
        if self.fastv_layer < 0:
            raise ValueError(f"--fastv-layer must be >= 0, got {self.fastv_layer}")
        for name in ("important_ratio", "attention_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        for name in ("erank_avg", "tau_step", "tau_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        return self

    def options(self):
        """Keyword options for select_visual_tokens."""
        return {name: getattr(self, name) for name in DEFAULT_OPTIONS}

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown pruning settings {sorted(unknown)}")
        return cls(**d).validate()

    @classmethod
    def from_args(cls, args):
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}).validate()


def add_pruning_args(parser):
    """The shared pruning flags (same names and meaning in every entry point)."""
    g = parser.add_argument_group("visual token pruning")
    g.add_argument("--pruning-method", dest="method", default="none", choices=sorted(METHODS) + ["none"],
                   help="how visual tokens are chosen before the LLM (fastv: inside the LLM)")
    g.add_argument("--visual-token-num", type=int, default=None,
                   help="K: visual embeddings fed to the LLM per image (per view with --budget-scope per-view)")
    g.add_argument("--erank-avg", type=float, default=DEFAULT_OPTIONS["erank_avg"],
                   help="agile/adaptive rules: reference effective rank (90 for LLaVA-1.5-7B; "
                        "python -m llava.pruning.calibrate for other models)")
    g.add_argument("--tau-max", type=float, default=DEFAULT_OPTIONS["tau_max"], help="agile: cap on the cosine-distance threshold")
    g.add_argument("--tau-step", type=float, default=DEFAULT_OPTIONS["tau_step"], help="agile: threshold growth per attention rank")
    g.add_argument("--important-ratio", type=float, default=DEFAULT_OPTIONS["important_ratio"],
                   help="vispruner: share of K chosen by attention (before the complexity rule)")
    g.add_argument("--attention-share", type=float, default=DEFAULT_OPTIONS["attention_share"],
                   help="mix: share R of K chosen by attention, the rest by DivPrune (before the complexity rule)")
    g.add_argument("--complexity-rule", default="fixed", choices=COMPLEXITY_RULES,
                   help="mix/vispruner: fixed R, adaptive (R falls as erank rises) or inverse (ablation)")
    g.add_argument("--share-slope", type=float, default=DEFAULT_OPTIONS["share_slope"],
                   help="adaptive/inverse: R = clip(R0 -/+ slope * (erank/erank_avg - 1), share_min, share_max)")
    g.add_argument("--share-min", type=float, default=DEFAULT_OPTIONS["share_min"], help="adaptive/inverse: lower clip of R")
    g.add_argument("--share-max", type=float, default=DEFAULT_OPTIONS["share_max"], help="adaptive/inverse: upper clip of R")
    g.add_argument("--pruning-seed", dest="seed", type=int, default=DEFAULT_OPTIONS["seed"], help="random: seed")
    g.add_argument("--fastv-layer", type=int, default=2, help="fastv: decoder layer at which image tokens are pruned")
    g.add_argument("--budget-scope", default="per-view", choices=BUDGET_SCOPES,
                   help="LLaVA-1.6 anyres: K per view (per-view) or K over all views of an image (global)")
    g.add_argument("--pruning-stats", action="store_true",
                   help="record per image: erank of all and of kept tokens, attention entropy, kept indices, time")
    return parser


def parse_pruning_args(argv=None):
    return PruningConfig.from_args(add_pruning_args(argparse.ArgumentParser()).parse_args(argv))
