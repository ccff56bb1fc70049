"""Visual-token selection methods: pure tensor functions, registered by name.

Every method maps features [B, N, D] (post-projector) and the CLS->patch attention [B, N] (head-averaged,
not renormalised; None for methods that need none) to the indices of the k kept tokens, [B, k]. The
caller (`select_visual_tokens`) sorts them into raster order. All math is float32 and per image, so a
batch selects exactly what one image at a time does. Adding a method = one function + `@register`.
"""
from dataclasses import dataclass
from typing import Callable

import torch

from .metrics import effective_rank

DEFAULT_OPTIONS = {
    "erank_avg": 90.0,  # AgilePruner's mean erank of the LLaVA-1.5-7B training set (post-projector)
    "tau_max": 0.25,
    "tau_step": 0.01,
    "important_ratio": 0.5,  # VisPruner's default
    "attention_share": 0.5,  # mix: share of K chosen by attention (R)
    "complexity_rule": "fixed",  # fixed | adaptive | inverse (for mix and vispruner)
    "share_slope": 1.0,  # adaptive: R = clip(R0 - slope * (erank/erank_avg - 1), share_min, share_max)
    "share_min": 0.1,
    "share_max": 0.9,
    "seed": 0,
}
COMPLEXITY_RULES = ("fixed", "adaptive", "inverse")


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable
    needs_attention: bool
    in_llm: bool = False  # FastV-style: selection happens inside the decoder, not here
    merges: bool = False  # builds new tokens from the tower's states (llava.pruning.merging)


METHODS = {}


def register(name, needs_attention=False, in_llm=False, merges=False):
    def wrap(fn):
        METHODS[name] = Method(name, fn, needs_attention, in_llm, merges)
        return fn

    return wrap


# ---- shared geometry ----------------------------------------------------------------------------
def cosine_distance(x):
    """x [B, N, D] -> 1 - cos, [B, N, N] (rows L2-normalised with +1e-8, as the reference codes do)."""
    x = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
    return 1.0 - x @ x.transpose(1, 2)


def attention_order(attention):
    """Token indices by descending attention, ties to the lower index. [B, N]."""
    return torch.sort(attention, dim=-1, descending=True, stable=True).indices


def first_k(mask, k):
    """Within each row of a boolean mask [B, N], keep only its first k True entries."""
    return mask & (mask.long().cumsum(dim=-1) <= k)


def max_min_walk(dist, chosen, steps):
    """Greedy max-min (k-center) steps on a distance matrix, continuing from the set `chosen`.

    dist [B, N, N]; chosen [B, N] bool (non-empty per row). Each step picks the token whose distance to
    its nearest chosen token is largest (ties: lowest index). Returns the picks in order, [B, steps].
    Vectorised over all tokens; no host synchronisation inside the loop.
    """
    b = dist.shape[0]
    rows = torch.arange(b, device=dist.device)
    chosen = chosen.clone()
    inf = torch.tensor(float("inf"), device=dist.device)
    min_dist = torch.where(chosen[:, :, None], dist, inf).amin(dim=1)
    picks = torch.zeros(b, steps, dtype=torch.long, device=dist.device)
    for step in range(steps):
        pick = torch.where(chosen, -inf, min_dist).argmax(dim=-1)
        chosen[rows, pick] = True
        min_dist = torch.minimum(min_dist, dist[rows, pick])
        picks[:, step] = pick
    return picks


def most_isolated(dist):
    """DivPrune's first token: the largest distance to its nearest neighbour. [B]."""
    eye = torch.eye(dist.shape[-1], dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, float("inf")).amin(dim=1).argmax(dim=-1)


def walk_from(dist, first, k):
    """k tokens: `first` [B] then k - 1 max-min steps. [B, k]."""
    chosen = torch.zeros(dist.shape[:2], dtype=torch.bool, device=dist.device)
    chosen[torch.arange(dist.shape[0], device=dist.device), first] = True
    return torch.cat([first[:, None], max_min_walk(dist, chosen, k - 1)], dim=1)


def attention_share(options, erank_ratio, base):
    """The attention share R of a hybrid after the complexity rule (fixed / adaptive / inverse).

    adaptive: R = clip(R0 - slope * (erank/erank_avg - 1), share_min, share_max): simple images (low
    erank) get more attention-chosen tokens, complex ones more diverse ones; inverse flips the sign.
    """
    rule = options["complexity_rule"]
    if rule == "fixed":
        return torch.full_like(erank_ratio, float(base))
    sign = -1.0 if rule == "adaptive" else 1.0
    r = base + sign * options["share_slope"] * (erank_ratio - 1.0)
    return r.clamp(options["share_min"], options["share_max"])


def _erank_ratio(features, options):
    return effective_rank(features) / options["erank_avg"]


# ---- methods --------------------------------------------------------------------------------------
@register("random")
def select_random(features, attention, k, **options):
    """k tokens uniformly at random, seeded (the same image gives the same tokens on every call)."""
    b, n, _ = features.shape
    g = torch.Generator(device="cpu").manual_seed(int(options["seed"]))
    return torch.randperm(n, generator=g)[:k].to(features.device).expand(b, k)


@register("fastervlm", needs_attention=True)
def select_fastervlm(features, attention, k, **options):
    """FasterVLM: the k patches with the highest CLS attention."""
    return attention_order(attention)[:, :k]


@register("divprune")
def select_divprune(features, attention, k, **options):
    """DivPrune: greedy max-min diversity on cosine distance. The first token is the most isolated
    one (largest distance to its nearest neighbour); then repeatedly the token farthest from the set."""
    dist = cosine_distance(features)
    return walk_from(dist, most_isolated(dist), k)


@register("fps", needs_attention=True)
def select_fps(features, attention, k, **options):
    """Farthest point sampling on cosine distance, starting from the highest-attention token."""
    return walk_from(cosine_distance(features), attention_order(attention)[:, 0], k)


@register("mix", needs_attention=True)
def select_mix(features, attention, k, **options):
    """FasterVLM + DivPrune: round(R*k) top-attention tokens, then max-min diversity fills the rest,
    continuing from the attention-chosen set (distances to it count). R = attention_share after the
    complexity rule; R*k = 0 is plain DivPrune."""
    share = attention_share(options, _erank_ratio(features, options), options["attention_share"])
    n_att = torch.round(share * k).long().clamp(0, k)  # [B]
    order = attention_order(attention)
    b, n = order.shape
    rows = torch.arange(b, device=order.device)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))
    chosen = rank < n_att[:, None]
    dist = cosine_distance(features)
    empty = n_att == 0
    if bool(empty.any()):
        chosen[rows[empty], most_isolated(dist)[empty]] = True
    need = k - chosen.sum(dim=-1)  # [B]
    picks = max_min_walk(dist, chosen, int(need.max()))
    take = torch.arange(picks.shape[1], device=picks.device)[None] < need[:, None]
    chosen[rows[:, None].expand_as(picks)[take], picks[take]] = True
    return chosen.nonzero()[:, 1].view(b, k)


@register("vispruner", needs_attention=True)
def select_vispruner(features, attention, k, **options):
    """VisPruner: floor(k*r) important tokens by CLS attention, then the rest of the list (still in
    attention order) is de-duplicated ToMe-style: split by position parity, drop up to 8 of the even
    entries most similar to an odd entry, reorder survivors by that similarity, repeat until k - n_imp
    remain. r is `important_ratio`, after the complexity rule. (VisPruner measures similarity on the
    pre-projector CLIP features; here on the features given, post-projector, like the other methods.)"""
    ratio = _erank_ratio(features, options)
    shares = attention_share(options, ratio, options["important_ratio"])
    order = attention_order(attention)
    sim = 1.0 - cosine_distance(features)  # all pairs once; each round reads a block of it
    out = []
    for i in range(features.shape[0]):  # rows may split k differently; each is independent
        n_imp = int(torch.floor(shares[i] * k))
        important, rest = order[i, :n_imp], order[i, n_imp:]
        n_div = k - n_imp
        while rest.numel() > n_div:
            step = min(8, rest.numel() - n_div)
            a, bb = rest[0::2], rest[1::2]
            score = sim[i, a][:, bb].amax(dim=-1)
            by_dup = torch.sort(score, descending=True, stable=True).indices
            rest = torch.cat([a[by_dup[step:]], bb])
        out.append(torch.cat([important, rest]))
    return torch.stack(out)


@register("agile", needs_attention=True)
def select_agile(features, attention, k, **options):
    """AgilePruner: walk tokens by descending CLS attention; keep a token if still alive, then suppress
    every alive token within cosine distance tau_i = min(order_i * erank/erank_avg * tau_step, tau_max)
    of it (order_i = its 1-based rank in the attention order); stop at k; backfill by attention.

    Vectorised: order_i is known before the walk, so the suppression matrix S[p, q] (p suppresses q)
    is built up front in attention order, and the greedy walk is the unique fixed point of
    keep[q] = not any(keep[p] and S[p, q] for p < q), found by iterating a matrix-vector product
    (position p is final after p iterations; in practice a handful of iterations suffice).
    """
    order, dist, tau = agile_inputs(features, attention, **options)
    keep = agile_walk(dist, tau, k)
    return order.gather(1, keep.nonzero()[:, 1].view(features.shape[0], k))


def agile_inputs(features, attention, **options):
    """What the walk needs, all in attention order: (order [B, N], cosine distances [B, N, N],
    thresholds tau [B, N] with tau[p] = min((p + 1) * erank/erank_avg * tau_step, tau_max))."""
    b, n, _ = features.shape
    order = attention_order(attention)
    dist = cosine_distance(features)
    dist = dist.gather(1, order[:, :, None].expand(b, n, n)).gather(2, order[:, None, :].expand(b, n, n))
    ratio = _erank_ratio(features, options).double()
    rank = torch.arange(1, n + 1, device=features.device, dtype=torch.float64)
    # in double, then compared in float32: what a per-token loop with Python-float thresholds does
    tau = (rank[None] * ratio[:, None] * options["tau_step"]).clamp(max=options["tau_max"]).float()
    return order, dist, tau


def agile_walk(dist, tau, k):
    """The greedy walk as a fixed point: keep[q] = not any(keep[p] and dist[p, q] < tau[p], p < q).

    dist [B, N, N] and tau [B, N] in attention order. Returns a bool mask [B, N] (attention order) of
    exactly k tokens: the first k kept, then backfill by attention if fewer than k survive.
    keep[q] depends only on earlier positions, so the walk is solved on a prefix of 2k positions
    first and the prefix doubles only while fewer than k tokens survive in it.
    """
    b, n, _ = dist.shape
    m = min(n, 2 * k)
    while True:
        later = torch.ones(m, m, dtype=torch.bool, device=dist.device).triu(1)
        suppress = ((dist[:, :m, :m] < tau[:, :m, None]) & later).float()  # [B, p, q]: p suppresses q
        keep = torch.ones(b, 1, m, device=dist.device)
        for _ in range(m):  # after i rounds the first i positions are final; real inputs settle in a few
            new = ((keep @ suppress) == 0).float()
            if torch.equal(new, keep):
                break
            keep = new
        if m == n or bool((keep.sum(dim=-1) >= k).all()):
            break
        m = min(n, 2 * m)
    kept = torch.zeros(b, n, dtype=torch.bool, device=dist.device)
    kept[:, :m] = first_k(keep[:, 0].bool(), k)
    missing = k - kept.sum(dim=-1, keepdim=True)  # candidates ran out: backfill in attention order
    return kept | ((~kept) & ((~kept).long().cumsum(dim=-1) <= missing))


def agile_walk_loop(dist, tau, k):
    """The same walk as the official code runs it: one token at a time on device tensors, with a
    host round-trip per step. Inputs/outputs as `agile_walk` (one row). For tests and the benchmark."""
    b, n, _ = dist.shape
    out = torch.zeros(b, n, dtype=torch.bool, device=dist.device)
    for row in range(b):
        alive = torch.ones(n, dtype=torch.bool, device=dist.device)
        selected = 0
        for p in range(n):
            if not bool(alive[p]):
                continue
            if selected == k:
                break
            out[row, p] = True
            selected += 1
            alive[p] = False
            alive &= ~(dist[row, p] < tau[row, p])
        for p in range(n):  # backfill by attention
            if selected == k:
                break
            if not bool(out[row, p]):
                out[row, p] = True
                selected += 1
    return out


def agile_reference_loop(features, attention, k, **options):
    """The straightforward per-token loop of the AgilePruner rule (one image at a time, host-side
    control flow): the thing the vectorised version is checked and benchmarked against. [B, k] sorted."""
    options = {**DEFAULT_OPTIONS, **options}
    out = []
    for feats, attn in zip(features.float(), attention.float()):
        n = feats.shape[0]
        ratio = (effective_rank(feats) / options["erank_avg"]).item()
        dist = cosine_distance(feats[None])[0]
        order = torch.sort(attn, descending=True, stable=True).indices.tolist()
        alive = [True] * n
        selected = []
        for rank, i in enumerate(order, start=1):
            if not alive[i]:
                continue
            if len(selected) == k:
                break
            selected.append(i)
            alive[i] = False
            tau = min(rank * ratio * options["tau_step"], options["tau_max"])
            for j in (dist[i] < tau).nonzero().flatten().tolist():
                alive[j] = False
        for i in order:
            if len(selected) == k:
                break
            if i not in selected:
                selected.append(i)
        out.append(sorted(selected))
    return torch.tensor(out, dtype=torch.long, device=features.device)


# ---- VisionZip: merges before the projector (llava.pruning.merging.visionzip_merge) ---------------
@register("visionzip", needs_attention=True, merges=True)
def select_visionzip_merges(features, attention, k, **options):
    raise ValueError("visionzip merges tokens (llava.pruning.merging.visionzip_merge); it has no index selection")


# ---- FastV: inside the LLM ------------------------------------------------------------------------
@register("fastv", in_llm=True)
def select_fastv_in_llm(features, attention, k, **options):
    raise ValueError("fastv selects inside the language model (at --fastv-layer), not from visual features")


def fastv_select(last_token_attention, k):
    """FastV: the k image tokens the last prompt token attends to most (head-averaged attention of the
    layer before the pruning layer). last_token_attention [B, N] -> ascending indices [B, k]."""
    return attention_order(last_token_attention.float())[:, :k].sort(dim=-1).values
