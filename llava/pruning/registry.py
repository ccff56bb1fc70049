"""The method registry and the options every method accepts (with their defaults).

A method is one function `fn(features [B, N, D] float32, attention [B, N] float32 or None, k, **options)`
returning the indices of the k kept tokens, [B, k] in any order (the front door sorts them), registered
with `@register("name")`. `k` is always in [1, N - 1] there: the front door handles k >= N.
"""
from dataclasses import dataclass
from typing import Callable

DEFAULT_OPTIONS = {
    # AgilePruner (agile; erank_avg also sets the complexity ratio of the adaptive/inverse hybrids)
    "erank_avg": 90.0,  # mean erank of the LLaVA-1.5-7B training images, post-projector, centred (official code)
    "tau_max": 0.25,  # cap on the cosine-distance threshold
    "tau_step": 0.01,  # threshold growth per attention rank
    # hybrids: the share R of k chosen by attention, before the complexity rule
    "important_ratio": 0.5,  # vispruner (VisPruner's default)
    "attention_share": 0.5,  # mix (FasterVLM + DivPrune)
    "complexity_rule": "fixed",  # fixed | adaptive | inverse
    # adaptive: R = clip(R0 - share_slope * (erank/erank_avg - 1), share_min, share_max); inverse: + instead
    "share_slope": 1.0,
    "share_min": 0.1,
    "share_max": 0.9,
    "seed": 0,  # random
}
COMPLEXITY_RULES = ("fixed", "adaptive", "inverse")


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable
    needs_attention: bool = False  # needs the CLS->patch attention row
    in_llm: bool = False  # FastV-style: the selection happens inside the decoder (see fastv_select)
    merges: bool = False  # builds new tokens (VisionZip): only prune_visual_tokens can run it
    keeps_all: bool = False  # `none`: no pruning whatever k is


METHODS = {}


def register(name, needs_attention=False, in_llm=False, merges=False, keeps_all=False):
    """Decorator: `@register("name")` adds a selection function to METHODS under that name."""

    def wrap(fn):
        if name in METHODS:
            raise ValueError(f"pruning method {name!r} is registered twice")
        METHODS[name] = Method(name, fn, needs_attention, in_llm, merges, keeps_all)
        return fn

    return wrap


def check_k(k):
    """k as a Python int, or a ValueError if it is not a positive integer."""
    if isinstance(k, bool) or not hasattr(k, "__index__") or k.__index__() <= 0:
        raise ValueError(f"visual token number k must be a positive integer, got {k!r}")
    return k.__index__()
