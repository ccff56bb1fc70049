"""Visual-token selection methods (all but AgilePruner, which has its own file): pure tensor functions.

Every selection method maps features [B, N, D] (post-projector, float32) and the CLS->patch attention
[B, N] (head-averaged, not renormalised, float32; None for methods that need none) to the indices of
the k kept tokens, [B, k] in any order; `select_visual_tokens` sorts them into raster order. All math
is per image, so a batch selects exactly what one image at a time does. Ties in any ranking go to the
lower token index. Adding a method = one function + `@register`.
"""
import torch

from .metrics import centred_gram, erank_from_gram
from .registry import COMPLEXITY_RULES, DEFAULT_OPTIONS, METHODS, Method, check_k, register  # noqa: F401 (re-exported)


# ---- shared geometry ----------------------------------------------------------------------------
def cosine_distance(x):
    """x [B, N, D] -> 1 - cos, [B, N, N]. Rows are divided by (L2 norm + 1e-8) first, as the
    reference implementations do."""
    x = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
    return 1.0 - x @ x.transpose(1, 2)


def token_geometry(features):
    """Cosine distances [B, N, N] and effective rank [B] of features [B, N, D] from one N x N product.

    The erank needs the Gram matrix of the mean-centred tokens C; the plain dot products follow from
    it, x_i.x_j = C_ij + c_i.m + c_j.m + m.m (c_i the centred token, m the mean), so the second
    N x D x N product that `cosine_distance` would run is skipped (the bulk of the cost on a CPU).
    The distances are 1 - x_i.x_j / ((|x_i| + 1e-8)(|x_j| + 1e-8)), the same quantity as
    `cosine_distance` up to float32 rounding (~1e-7)."""
    gram, centred, mean = centred_gram(features)
    erank = erank_from_gram(gram)
    along = centred @ mean.transpose(1, 2)  # [B, N, 1]
    dots = gram + along + along.transpose(1, 2) + (mean * mean).sum(dim=-1, keepdim=True)
    norm = features.float().norm(dim=-1) + 1e-8
    return 1.0 - dots / (norm[:, :, None] * norm[:, None, :]), erank


def attention_order(attention):
    """Token indices by descending attention, ties to the lower index: [B, N] -> [B, N]."""
    return torch.sort(attention, dim=-1, descending=True, stable=True).indices


def true_positions(mask, k):
    """The positions of the first k True entries of each row of a bool mask [B, N] (every row has at
    least k), ascending: [B, k]. No host synchronisation (unlike nonzero)."""
    return torch.sort(mask.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :k]


def max_min_walk(dist, chosen, steps):
    """Greedy max-min (k-center) steps on a distance matrix, continuing from the set `chosen`.

    dist [B, N, N]; chosen [B, N] bool, non-empty per row. Each step picks the unchosen token whose
    distance to its nearest chosen token (min over chosen s of dist[s, j]) is largest, ties to the
    lowest index. Returns the picks in order, [B, steps]. One running-min vector (O(steps * N)), no
    host synchronisation inside the loop.
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
    """DivPrune's first token: the one whose nearest other token is farthest, [B]. Self-distances are
    excluded explicitly (DivPrune takes the second-smallest entry of the column, which is the same
    thing unless two tokens are exact duplicates)."""
    eye = torch.eye(dist.shape[-1], dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, float("inf")).amin(dim=1).argmax(dim=-1)


def walk_from(dist, first, k):
    """k tokens: `first` [B], then k - 1 max-min steps. [B, k]."""
    chosen = torch.zeros(dist.shape[:2], dtype=torch.bool, device=dist.device)
    chosen[torch.arange(dist.shape[0], device=dist.device), first] = True
    return torch.cat([first[:, None], max_min_walk(dist, chosen, k - 1)], dim=1)


# ---- image-aware hybrids ------------------------------------------------------------------------------
def complexity_share(base, erank, rule, erank_avg, share_slope, share_min, share_max):
    """The attention share R of a hybrid after the complexity rule, float64 [B].

    fixed: R = base. adaptive: R = clip(base - share_slope * (erank/erank_avg - 1), share_min, share_max),
    so simple images (low erank) get more attention-chosen tokens and complex ones more diverse ones, as
    AgilePruner's findings say; inverse: the sign flipped (the paper's ablation). Computed in float64 so
    that the fixed rule's counts are the Python arithmetic of the original methods (floor(k * r))."""
    if rule == "fixed":
        return torch.full(erank.shape, float(base), dtype=torch.float64, device=erank.device)
    sign = -1.0 if rule == "adaptive" else 1.0
    r = base + sign * share_slope * (erank.double() / erank_avg - 1.0)
    return r.clamp(share_min, share_max)


def hybrid_geometry(features, base, options):
    """Cosine distances [B, N, N] and the attention share R [B] (float64) of a hybrid method. The
    erank (an N x N eigendecomposition) is computed only when the rule needs it."""
    rule = options["complexity_rule"]
    if rule == "fixed":
        dist = cosine_distance(features)
        erank = torch.zeros(features.shape[0], dtype=torch.float64, device=features.device)
    else:
        dist, erank = token_geometry(features)
    share = complexity_share(base, erank, rule, options["erank_avg"], options["share_slope"],
                             options["share_min"], options["share_max"])
    return dist, share


# ---- methods --------------------------------------------------------------------------------------
@register("none", keeps_all=True)
def select_none(features, attention, k, **options):
    """No pruning: every token, whatever k."""
    b, n, _ = features.shape
    return torch.arange(n, device=features.device).expand(b, n)


@register("random")
def select_random(features, attention, k, seed=0, **options):
    """k tokens uniformly at random from a generator seeded with `seed`: the same tokens for every
    image and every call (so batch-independent and reproducible)."""
    b, n, _ = features.shape
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:k].to(features.device).expand(b, k)


@register("fastervlm", needs_attention=True)
def select_fastervlm(features, attention, k, **options):
    """FasterVLM: the k patches with the highest CLS attention."""
    return attention_order(attention)[:, :k]


@register("divprune")
def select_divprune(features, attention, k, **options):
    """DivPrune: greedy max-min diversity on cosine distance. The first token is the most isolated one
    (largest distance to its nearest neighbour); then repeatedly the token farthest from the chosen set
    (largest min distance to it). Ties to the lowest index."""
    dist = cosine_distance(features)
    return walk_from(dist, most_isolated(dist), k)


@register("fps", needs_attention=True)
def select_fps(features, attention, k, **options):
    """Farthest point sampling on cosine distance, starting from the highest-attention token (the
    FPSPruner baseline of the AgilePruner paper)."""
    return walk_from(cosine_distance(features), attention_order(attention)[:, 0], k)


@register("mix", needs_attention=True)
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


@register("vispruner", needs_attention=True)
def select_vispruner(features, attention, k, **options):
    """VisPruner: floor(k * r) important tokens by CLS attention, then the rest of the list (still in
    attention order) is de-duplicated ToMe-style until k - floor(k * r) remain: split it by position
    parity, drop the min(8, excess) even entries most cosine-similar to an odd entry, put the surviving
    even entries first, most similar first, then the odd ones, and repeat. r = important_ratio after the
    complexity rule. (VisPruner measures similarity on the pre-projector CLIP features; here it is the
    post-projector features every method receives.)"""
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


# ---- VisionZip: builds new tokens, so only prune_visual_tokens runs it -------------------------------
VISIONZIP_DOMINANT_SHARE = 54 / 64  # VisionZip's 64-token setting: 54 dominant (CLS included) + 10 contextual


def visionzip_tokens(features, attention, k, cls_features=None, keys=None, dominant=None):
    """VisionZip: dominant tokens plus merged contextual tokens, k in all.

    features [B, N, C] patch states (any dtype); attention [B, N] CLS->patch attention; cls_features
    [B, C] the CLS state or None; keys [B, N, d] the per-patch metric for the merge (VisionZip: the
    select layer's keys averaged over heads) or None to use the features themselves.

    dominant (default round(k * 54/64), VisionZip's 54:10 split) counts the CLS token when
    cls_features is given: CLS + the top (dominant - 1) patches by attention, exactly as VisionZip
    counts it. Our tower hands out patch features only, so without cls_features the CLS slot goes to
    the next patch by attention (dominant patches in all); either way k tokens come out.
    The other patches, in raster order, are merged into c = k - dominant contextual tokens: targets are
    every s-th of them (s = max(1, R // c), the first c), each other patch joins the target whose metric
    is most cosine-similar, and a contextual token is its target's state plus the mean of its members'
    states (the target alone if none joined). The merge runs in float32.

    Returns (tokens [B, k, C] in features' dtype: [CLS], dominant patches in raster order, contextual
    tokens in raster order of their targets; dominant patch indices [B, k'] ascending).
    """
    b, n, c_dim = features.shape
    has_cls = cls_features is not None
    n_dom = int(round(k * VISIONZIP_DOMINANT_SHARE)) if dominant is None else int(dominant)
    n_dom = max(1, min(n_dom, k))
    n_top, n_ctx = n_dom - int(has_cls), k - n_dom
    top = attention_order(attention)[:, :n_top].sort(dim=-1).values  # [B, n_top]
    parts = [cls_features.to(features.dtype)[:, None]] if has_cls else []
    parts.append(features.gather(1, top[:, :, None].expand(-1, -1, c_dim)))
    if n_ctx > 0:
        is_top = torch.zeros(b, n, dtype=torch.bool, device=features.device).scatter_(1, top, True)
        rest_idx = true_positions(~is_top, n - n_top)  # raster order
        rest = features.float().gather(1, rest_idx[:, :, None].expand(-1, -1, c_dim))
        metric = rest if keys is None else keys.float().gather(1, rest_idx[:, :, None].expand(-1, -1, keys.shape[-1]))
        metric = metric / (metric.norm(dim=-1, keepdim=True) + 1e-8)
        r = n - n_top
        step = max(1, r // n_ctx)
        is_target = torch.zeros(r, dtype=torch.bool)  # positions in the rest list: shapes only, on the host
        is_target[torch.arange(0, r, step)[:n_ctx]] = True
        targets = is_target.nonzero()[:, 0].to(features.device)
        members = (~is_target).nonzero()[:, 0].to(features.device)
        assign = (metric[:, members] @ metric[:, targets].transpose(1, 2)).argmax(dim=-1)  # [B, members]
        sums = torch.zeros(b, n_ctx, c_dim, device=features.device).scatter_add_(
            1, assign[:, :, None].expand(-1, -1, c_dim), rest[:, members])
        counts = torch.zeros(b, n_ctx, device=features.device).scatter_add_(
            1, assign, torch.ones(assign.shape, device=features.device))
        parts.append((rest[:, targets] + sums / counts.clamp(min=1)[:, :, None]).to(features.dtype))
    return torch.cat(parts, dim=1), top


@register("visionzip", needs_attention=True, merges=True)
def merge_visionzip(features, attention, k, cls_features=None, keys=None, **options):
    """VisionZip on the features given (see visionzip_tokens): (tokens [B, k, D], dominant patch
    indices [B, k'])."""
    return visionzip_tokens(features, attention, k, cls_features=cls_features, keys=keys)


# ---- FastV: inside the LLM ------------------------------------------------------------------------
@register("fastv", in_llm=True)
def select_fastv_in_llm(features, attention, k, **options):
    raise ValueError("fastv selects inside the language model (at --fastv-layer, llava/model/fastv.py via "
                     "fastv_select), not from the visual features")


def fastv_select(last_token_attention, k):
    """FastV: the k image tokens the last prompt token attends to most (attention of the layer before
    the pruning layer, averaged over heads). last_token_attention [B, N] -> ascending indices [B, k];
    k >= N keeps all. Ties to the lower index."""
    if last_token_attention.ndim != 2:
        raise ValueError(f"last_token_attention must be [B, N], got shape {tuple(last_token_attention.shape)}")
    k = check_k(k)
    b, n = last_token_attention.shape
    if k >= n:
        return torch.arange(n, device=last_token_attention.device).expand(b, n)
    return attention_order(last_token_attention.float())[:, :k].sort(dim=-1).values
