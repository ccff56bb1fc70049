"""The simplest rules: no pruning, random tokens, and FasterVLM's top CLS attention."""
import torch

from ..geometry import attention_order
from ..registry import Option, register

SEED = Option("seed", 0, "random: seed of the token draw", kind=int, flag="--pruning-seed")


@register("none", stage="none", summary="keep every visual token")
def select_none(features, attention, k):
    """No pruning: every token, whatever k."""
    b, n, _ = features.shape
    return torch.arange(n, device=features.device).expand(b, n)


@register("random", options=(SEED,), summary="k tokens drawn at random (the same for every image)")
def select_random(features, attention, k, seed=0):
    """k tokens uniformly at random from a generator seeded with `seed`: the same tokens for every
    image and every call (so batch-independent and reproducible)."""
    b, n, _ = features.shape
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:k].to(features.device).expand(b, k)


@register("fastervlm", needs_attention=True, summary="FasterVLM: the k patches with the highest CLS attention")
def select_fastervlm(features, attention, k):
    """FasterVLM: the k patches with the highest CLS attention."""
    return attention_order(attention)[:, :k]
