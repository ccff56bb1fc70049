"""Image-aware hybrids: part of K by CLS attention, the rest by diversity, the split R set by a complexity
rule (fixed, or from the image's effective rank as AgilePruner's findings suggest)."""
import torch

from ..geometry import (COMPLEXITY_OPTIONS, attention_order, check_shares, hybrid_geometry, max_min_walk,
                        most_isolated, true_positions)
from ..registry import Option, register

ATTENTION_SHARE = Option("attention_share", 0.5, "mix: share R of K chosen by attention, the rest by DivPrune "
                         "(R0 of the complexity rule)", low=0.0, high=1.0)
IMPORTANT_RATIO = Option("important_ratio", 0.5, "vispruner: share of K chosen by attention, the rest by "
                         "de-duplication (R0 of the complexity rule)", low=0.0, high=1.0)
VISPRUNER_SIMILARITY = Option("vispruner_similarity", "tower", "vispruner: de-duplicate on the tower's select-layer "
                              "states (tower, as VisPruner) or on the projected features (projected)", kind=str,
                              choices=("tower", "projected"))


@register("mix", needs_attention=True, options=(ATTENTION_SHARE,) + COMPLEXITY_OPTIONS, check=check_shares,
          summary="FasterVLM + DivPrune: R*K by attention, the rest by max-min diversity")
def select_mix(features, attention, k, **options):
    """FasterVLM + DivPrune: round(R * k) top-attention tokens, then DivPrune's max-min walk fills the rest
    among the remaining tokens, *conditioned on the attention-chosen ones*: a candidate's score is its
    distance to the nearest token already chosen by either part, so the diverse part covers what the
    attention part missed instead of re-covering it. R = attention_share after the complexity rule;
    round() is half-to-even, as Python's. R * k rounding to 0 is plain DivPrune (most-isolated start),
    to k plain FasterVLM."""
    dist, share = hybrid_geometry(features, options["attention_share"], options)
    b, n = attention.shape
    n_att = torch.round(share * k).long().clamp(0, k)  # [B]
    order = attention_order(attention)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))
    chosen = rank < n_att[:, None]
    first = torch.zeros_like(chosen).scatter_(1, most_isolated(dist)[:, None], True)
    chosen |= (n_att == 0)[:, None] & first
    need = k - chosen.sum(dim=-1)  # [B]
    steps = int(need.max())
    if steps:
        picks = max_min_walk(dist, chosen, steps)  # rows needing fewer steps ignore their extra picks
        take = torch.arange(steps, device=picks.device)[None] < need[:, None]
        chosen.scatter_(1, picks, take)
    return true_positions(chosen, k)


@register("vispruner", needs_attention=True, options=(IMPORTANT_RATIO, VISPRUNER_SIMILARITY) + COMPLEXITY_OPTIONS,
          inputs=("states",), check=check_shares,
          summary="VisPruner: R*K important tokens by attention, the rest de-duplicated")
def select_vispruner(features, attention, k, states=None, **options):
    """VisPruner: floor(k * r) important tokens by CLS attention, then the rest of the list (still in
    attention order) is de-duplicated ToMe-style until k - floor(k * r) remain: split it by position
    parity, drop the min(8, excess) even entries most cosine-similar to an odd entry, put the surviving
    even entries first, most similar first, then the odd ones, and repeat. r = important_ratio after the
    complexity rule. The similarity is measured on the tower's select-layer states (`states` [B, N, C],
    pre-projector), as VisPruner computes it, with vispruner_similarity=tower (the default), or on the
    projected features with vispruner_similarity=projected (this project's earlier variant); the erank
    of the complexity rule is always that of the projected features."""
    if options["vispruner_similarity"] == "tower":
        if states is None:
            raise ValueError("vispruner (--vispruner-similarity tower) needs the tower's select-layer states "
                             "(states=[B, N, C]); pass them or use --vispruner-similarity projected")
        if tuple(states.shape[:2]) != tuple(features.shape[:2]):
            raise ValueError(f"states must be [B, N, C] with [B, N] = {tuple(features.shape[:2])}, "
                             f"got {tuple(states.shape)}")
        dist, share = hybrid_geometry(features, options["important_ratio"], options, states.float())
    else:
        dist, share = hybrid_geometry(features, options["important_ratio"], options)
    sim = 1.0 - dist  # all pairs once; each round reads a block of it
    order = attention_order(attention)
    out = []
    for i, r in enumerate(share.tolist()):  # rows may split k differently; each is independent
        n_imp = int(r * k)  # floor, as VisPruner's int(T * r)
        important, rest = order[i, :n_imp], order[i, n_imp:]
        n_div = k - n_imp
        rest = rest if n_div else rest[:0]
        while rest.numel() > n_div:
            step = min(8, rest.numel() - n_div)
            even, odd = rest[0::2], rest[1::2]
            score = sim[i, even][:, odd].amax(dim=-1)
            by_dup = torch.sort(score, descending=True, stable=True).indices
            rest = torch.cat([even[by_dup[step:]], odd])
        out.append(torch.cat([important, rest]))
    return torch.stack(out)
