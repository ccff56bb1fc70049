"""AgilePruner (ICLR 2026): adaptive similarity thresholding, vectorised and certified, and the per-token loop.

The rule, per image (notes: shared/research/agilepruner.md §2.3):
  1. erank = effective rank of the mean-centred features of all N visual tokens (the features given:
     post-projector for LLaVA), with the official epsilons (metrics.erank_from_gram).
  2. D = 1 - cosine similarity of the *un-centred* features (rows / (L2 norm + 1e-8)); both come from
     one N x N product (geometry.token_geometry), D equal to the direct formula up to ~1e-7.
  3. Walk tokens by descending CLS attention (ties: lower token index first; the official code's
     argsort leaves ties unspecified). A token still alive is kept; it then kills every alive token j
     with D[i, j] < tau_i (strict), tau_i = min(order_i * (erank / erank_avg * tau_step), tau_max),
     order_i = its 1-based rank in the global attention order (pruned tokens still use up ranks).
  4. Stop at k kept. If the alive tokens run out first, backfill with the not-kept tokens in attention
     order. Output: k indices in raster order.
tau is computed in float64 (the official code uses Python floats) and compared with the float32
distances in float32, as a float32 tensor compared with a Python float is.

How `agile` computes that rule exactly, mostly without the erank and the N x N product (`agile_select`):
  The erank enters only through the thresholds, and the walk's result is the same for every erank in an
  interval [lo, hi] whenever the walk run with the smallest thresholds tau(lo) (kills_lo) keeps a set K
  in which no kept token p lies within tau_p(hi) of a later kept token (kills_hi). Proof, position by
  position: for any kill relation R with kills_lo <= R <= kills_hi, a token of K is killed by no earlier
  kept token under R (not even under kills_hi) and a skipped token is killed by an earlier kept token
  under kills_lo, hence under R; so R keeps exactly K, stops where K does, and backfills the same way.
  tau is monotone in the erank (float rounding included), so every erank in [lo, hi] gives an R in
  between. [lo, hi] = metrics.erank_bounds: [1, N] widened for rounding, true for any input, so no
  eigendecomposition is needed to use it.
  The same sandwich absorbs the distances' rounding: the walk reads only the distances among the tokens
  it visits (attention positions in blocks: 32, doubling, a stop at k; a walk that stops at position L
  needs at most L^2 of the N^2), evaluated on those tokens by token_geometry's formula, which a BLAS may
  sum in another order than token_geometry's full product; `lazy_geometry` bounds that difference
  rigorously (margin, from the standard dot-product error bound), and kills_lo / kills_hi use
  d + margin / d - margin.
  Images the certificate does not decide (a kept pair within [tau(lo) - margin, tau(hi) + margin): tokens
  within tau_max of each other among the visited ones, as real images have) take the exact path:
  `token_geometry` (centred Gram, eigvalsh, distances, exactly what the reference loop reads) and
  `agile_walk`. Either way the indices are the per-token loop's, on every input; the certificate only
  decides how much is computed: no eigendecomposition and k x k distances when no visited pair is within
  tau_max (+ margin), e.g. random-weights models or the `noise` regime.
"""
import torch

from .geometry import ERANK_AVG, attention_order, cosine_distance, token_geometry, true_positions
from .metrics import erank_bounds
from .registry import Option, register

TAU_MAX = Option("tau_max", 0.25, "agile: cap on the cosine-distance threshold", low=0.0, low_open=True)
TAU_STEP = Option("tau_step", 0.01, "agile: threshold growth per attention rank, scaled by erank/erank-avg",
                  low=0.0, low_open=True)
AGILE_OPTIONS = (ERANK_AVG, TAU_MAX, TAU_STEP)
AGILE_DEFAULTS = {o.name: o.default for o in AGILE_OPTIONS}


def agile_thresholds(erank, n, erank_avg, tau_max, tau_step):
    """tau for attention ranks 1..n of each image: erank [B] -> [B, n] float32 (computed in float64)."""
    rank = torch.arange(1, n + 1, dtype=torch.float64, device=erank.device)
    per_rank = erank.double() / erank_avg * tau_step  # [B], the official association
    return (rank[None] * per_rank[:, None]).clamp(max=tau_max).float()


def below(a, b):
    """(a < b) as 1.0 / 0.0 in a's float dtype (written straight into a float tensor: no bool pass)."""
    return torch.lt(a, b, out=torch.empty(torch.broadcast_shapes(a.shape, torch.as_tensor(b).shape),
                                          dtype=a.dtype, device=a.device))


def agile_walk(dist, order, tau, k, stats=None):
    """The greedy walk, vectorised: a blocked, fixed-point NMS. Returns a bool mask [B, N] over
    *attention positions* with exactly k True.

    dist [B, N, N] cosine distances (token index space); order [B, N] the attention order; tau [B, N]
    thresholds by attention position. Write p, q for attention positions: p kills q > p when
    dist[order[p], order[q]] < tau[p]. Every such row is known before the walk starts (order_p is just
    the position), and the walk is the unique solution of
        keep[q] = alive[q] and not any(keep[p] and kills[p, q] for p < q).
    Positions are taken in blocks (the first 2k, then doubling the prefix): a block's alive mask comes
    from the final keeps of the earlier blocks in one matrix-vector product, and inside the block the
    equation is solved by fixed-point iteration, x <- alive * (x @ kills == 0), which is exact once it
    has run as many rounds as the longest chain of kills in the block (keep[q] depends only on p < q)
    and stops at the first round that changes nothing (at most 11 rounds in all on bench_select's
    inputs, against up to N steps of the loop). Each distance row is read by its block only; host
    synchronisation happens once per round and once per block, never once per token. The walk stops
    after the block in which every image has k keeps, as the loop stops at k; then the first k keeps
    are taken, and if fewer than k survived, the backfill adds the other tokens by attention.
    stats (a dict, optional) receives the number of blocks and rounds.
    """
    b, n, _ = dist.shape
    flat = dist.reshape(b * n, n)
    offset = torch.arange(b, device=dist.device)[:, None] * n
    keep = torch.zeros(b, n, device=dist.device)
    suppressed = torch.zeros(b, n, device=dist.device)  # > 0: killed by a kept token of an earlier block
    start, end, blocks, rounds = 0, min(n, 2 * k), 0, 0
    while True:
        block, size = order[:, start:end], end - start  # the tokens at these attention positions
        rows = flat.index_select(0, (block + offset).flatten()).view(b, size, n)  # their distance rows
        thresholds = tau[:, start:end, None]
        inner = rows.gather(2, block[:, None, :].expand(-1, size, -1))  # [B, p, q] distances inside the block
        inner = below(inner, thresholds).triu_(1)  # p kills q, p < q
        alive = below(suppressed.gather(1, block), 0.5)
        x = alive
        for _ in range(size):  # exact after at most `size` rounds; stops at the fixed point
            rounds += 1
            new = (1.0 - x[:, None] @ inner)[:, 0].clamp_(min=0.0).mul_(alive)  # alive and no kept killer
            if torch.equal(new, x):
                break
            x = new
        keep[:, start:end] = x
        blocks += 1
        if end == n or bool((keep.sum(dim=-1) >= k).all()):
            break
        suppressed += (x[:, None] @ below(rows, thresholds))[:, 0]  # what this block's keeps kill
        start, end = end, min(n, 2 * end)
    if stats is not None:
        stats.update(blocks=blocks, rounds=rounds)
    kept = keep.bool() & (keep.cumsum(dim=-1) <= k)  # the first k keeps
    missing = k - kept.sum(dim=-1, keepdim=True)  # alive tokens ran out: backfill in attention order
    return kept | (~kept & ((~kept).long().cumsum(dim=-1) <= missing))


def agile_from_geometry(dist, erank, attention, k, erank_avg=90.0, tau_max=0.25, tau_step=0.01, stats=None, **_):
    """The vectorised rule given the geometry: dist [B, N, N], erank [B], attention [B, N] -> [B, k]
    token indices (selection order unspecified; the front door sorts them)."""
    order = attention_order(attention)
    tau = agile_thresholds(erank, order.shape[1], erank_avg, tau_max, tau_step)
    return order.gather(1, true_positions(agile_walk(dist, order, tau, k, stats), k))


# ---- the certified fast path: no erank and only the visited distance rows, unless it cannot decide ------
def lazy_geometry(features):
    """Cosine distances between chosen tokens on demand, with a rigorous bound on their difference from
    token_geometry's (which the reference loop reads).

    features [B, N, D] -> pairs(rows [B, r], cols [B, c] token indices) -> (dist [B, r, c], margin [B, r, c]);
    pairs.tokens(idx) and pairs.between(tokens_r, tokens_c) split that call, so that a caller can keep the
    per-token part (centring, norms) of tokens it reads again.
    dist is token_geometry's formula, 1 - (c_i.c_j + c_i.m + c_j.m + m.m) / ((|x_i| + 1e-8)(|x_j| + 1e-8)) with
    c = x - m, m the token mean, evaluated on the chosen tokens only (one r x D x c product). In exact
    arithmetic the numerator is x_i.x_j whatever m is; a float32 evaluation of it deviates from that by at
    most (gamma_D + 6u) (|c_i| + |m|)(|c_j| + |m|) (gamma_D = D u / (1 - D u), u = 2^-24: the standard bound
    for a dot product in any summation order, plus the centring and the three additions), a norm from
    |x_i| by (gamma_D / 2 + u) |x_i|, and the division and 1 - q add a few u. Two evaluations that differ
    only in summation order (a block of the Gram product, a GEMV over fewer rows, another thread count)
    therefore differ by at most (4 gamma_D + 18u) w_i w_j + 4u, w_i = (|c_i| + |m|) / (|x_i| + 1e-8);
    margin = 1.25 (4 gamma_D + 16u) w_i w_j + 32u with w_i from |c_i| (1 + 4 gamma_D) and |m| + 4 gamma_N
    max_j |x_j| (so that it also bounds the other evaluation's c and m, whose mean may round differently),
    the 1.25 and 32u covering the rounding of w and of d +- margin. Float32 math only (the front door turns
    TF32 and autocast off; under them the reference itself would round differently)."""
    x = features.float()
    mean = x.mean(dim=1, keepdim=True)  # [B, 1, D], as metrics.centred_gram
    mm = (mean * mean).sum(dim=-1, keepdim=True)  # [B, 1, 1], as token_geometry
    u, (n, dim) = 2.0 ** -24, x.shape[1:]
    gamma = dim * u / (1 - dim * u)
    kappa = 1.25 * (4 * gamma + 16 * u)
    # |m| plus what another evaluation's mean may differ by (a sum of N terms: 2 gamma_N max |x_j|)
    m_norm = mean.norm(dim=-1) + 4 * (n * u / (1 - n * u)) * x.norm(dim=-1).amax(dim=-1, keepdim=True)  # [B, 1]

    def tokens(idx):  # (centred vectors, c.m, norms, w) of the tokens idx [B, s]
        xs = x.gather(1, idx[:, :, None].expand(-1, -1, dim))
        c = xs - mean
        norm = xs.norm(dim=-1) + 1e-8
        return c, c @ mean.transpose(1, 2), norm, (c.norm(dim=-1) * (1 + 4 * gamma) + m_norm) / norm

    def between(rows, cols):  # tokens() of the rows and of the columns -> (dist, margin)
        c_r, a_r, n_r, w_r = rows
        c_c, a_c, n_c, w_c = cols
        dots = c_r @ c_c.transpose(1, 2) + a_r + a_c.transpose(1, 2) + mm
        dist = 1.0 - dots / (n_r[:, :, None] * n_c[:, None, :])
        return dist, (kappa * w_r)[:, :, None] * w_c[:, None, :] + 32 * u

    def pairs(rows, cols):
        return between(tokens(rows), tokens(cols))

    pairs.tokens, pairs.between = tokens, between  # for callers that reuse the rows' tokens() across calls
    return pairs


def not_below(a, b):
    """(not a >= b) as 1.0 / 0.0 in a's float dtype: like below(a, b), but NaN counts as below (a kill)."""
    return 1.0 - torch.ge(a, b, out=torch.empty(torch.broadcast_shapes(a.shape, torch.as_tensor(b).shape),
                                                dtype=a.dtype, device=a.device))


FIRST_BLOCK = 32  # attention positions in the certified walk's first block


def agile_certified_walk(pairs, order, tau_lo, tau_hi, k, stats=None):
    """The blocked walk of `agile_walk` under kills_lo, plus its certificate against kills_hi.

    pairs: (rows [B, r], cols [B, c]) token indices -> (dist [B, r, c], margin [B, r, c]) (lazy_geometry);
    order [B, N] the attention order; tau_lo <= tau_hi [B, N] thresholds by attention position.
    kills_lo[p, q] = dist + margin < tau_lo[p] (a kill for every distance and threshold in range),
    kills_hi[p, q] = not dist - margin >= tau_hi[p] (a kill for some, NaN included).
    Positions are taken in blocks, [0, min(k, FIRST_BLOCK)) first, then doubling up to the first k
    keeps (with no kill, position k ends the walk); a lost certificate then shows after a small block;
    a block reads only the distances from the positions so far to its own: one r x D x c product, so a
    walk that stops at position L computes at most L^2 of the N^2 distances. Inside a block the fixed
    point of `agile_walk` (one host synchronisation per round and per block). The walk also stops once
    every image still walking has lost its certificate (those go to the exact path).
    Returns (keep [B, N] bool over attention positions with exactly k True, as agile_walk; certified [B]
    bool: no kept token lies within kills_hi of an earlier kept one, so the keep mask is the walk's for
    every erank in the interval and for token_geometry's rounding of the distances, see the module
    docstring). stats (optional dict) receives blocks and rounds.
    """
    b, n = order.shape
    keep = torch.zeros(b, n, device=order.device)
    doubt = torch.zeros(b, n, device=order.device)  # kept tokens within kills_hi of an earlier kept one
    start, end, blocks, rounds = 0, min(n, k, FIRST_BLOCK), 0, 0
    split = hasattr(pairs, "tokens")
    seen = None  # tokens() of the positions so far, concatenated
    while True:
        size = end - start
        if split:  # [B, end, size]: positions so far -> block, the per-token part once per token
            new_tokens = pairs.tokens(order[:, start:end])
            seen = new_tokens if seen is None else tuple(torch.cat(p, dim=1) for p in zip(seen, new_tokens))
            dist, margin = pairs.between(seen, new_tokens)
        else:
            dist, margin = pairs(order[:, :end], order[:, start:end])
        lo = below(dist + margin, tau_lo[:, :end, None])
        hi = not_below(dist - margin, tau_hi[:, :end, None])
        before = keep[:, None, :start]
        alive = below((before @ lo[:, :start])[:, 0], 0.5)  # not killed by a kept token of an earlier block
        inner = lo[:, start:].triu(1)
        x = alive
        for _ in range(size):
            rounds += 1
            new = (1.0 - x[:, None] @ inner)[:, 0].clamp_(min=0.0).mul_(alive)
            if torch.equal(new, x):
                break
            x = new
        keep[:, start:end] = x
        doubt[:, start:end] = (before @ hi[:, :start])[:, 0] + (x[:, None] @ hi[:, start:].triu(1))[:, 0]
        blocks += 1
        kept = keep.bool() & (keep.cumsum(dim=-1) <= k)  # the first k keeps
        certified = ~(kept & (doubt > 0)).any(dim=-1)
        if end == n or bool(((keep.sum(dim=-1) >= k) | ~certified).all()):  # done, or left to the exact path
            break
        start, end = end, min(n, k if end < k < 2 * end else 2 * end)  # doubling, with a stop at k
    if stats is not None:
        stats.update(blocks=blocks, rounds=rounds)
    missing = k - kept.sum(dim=-1, keepdim=True)
    return kept | (~kept & ((~kept).long().cumsum(dim=-1) <= missing)), certified


def agile_select(features, attention, k, erank_avg=90.0, tau_max=0.25, tau_step=0.01, stats=None, **_):
    """The rule, exactly (the indices of agile_reference_loop on every input), computed the cheap way when
    it can be certified: features [B, N, D], attention [B, N] -> [B, k] token indices (selection order
    unspecified). See the module docstring. stats (a dict, optional) receives the certified walk's
    blocks and rounds, `exact`: how many images took the exact path (the erank), and that path's walk's
    exact_blocks and exact_rounds when it ran."""
    order = attention_order(attention)
    n = order.shape[1]
    lo, hi = erank_bounds(features)
    tau_lo = agile_thresholds(lo, n, erank_avg, tau_max, tau_step)
    tau_hi = agile_thresholds(hi, n, erank_avg, tau_max, tau_step)
    keep, certified = agile_certified_walk(lazy_geometry(features), order, tau_lo, tau_hi, k, stats)
    idx = order.gather(1, true_positions(keep, k))
    undecided = ~certified
    exact, exact_stats = 0, {}
    if bool(undecided.any()):  # one host synchronisation per call
        sub = undecided.nonzero()[:, 0]
        exact = sub.numel()
        whole = exact == idx.shape[0]  # then no copy of the features
        dist, erank = token_geometry(features if whole else features[sub])
        found = agile_from_geometry(dist, erank, attention if whole else attention[sub], k, erank_avg, tau_max,
                                    tau_step, stats=exact_stats)
        if whole:
            idx = found
        else:
            idx[sub] = found
    if stats is not None:
        stats.update(exact=exact, **{f"exact_{key}": v for key, v in exact_stats.items()})
    return idx


@register("agile", needs_attention=True, options=AGILE_OPTIONS,
          summary="AgilePruner: attention order with erank-adaptive similarity suppression")
def select_agile(features, attention, k, **options):
    """AgilePruner: keep tokens by descending CLS attention, each kept token suppressing the alive tokens
    within cosine distance tau_i = min(order_i * erank/erank_avg * tau_step, tau_max); backfill by
    attention; see the module docstring for the exact rule and how it is computed (`agile_select`)."""
    return agile_select(features, attention, k, **options)


# ---- the per-token loop (the thing the vectorised walk is checked and benchmarked against) ------------
def agile_reference_from_geometry(dist, erank, attention, k, erank_avg=90.0, tau_max=0.25, tau_step=0.01,
                                  stats=None, **_):
    """The rule as a plain loop, one image and one token at a time, on device tensors with a host
    round-trip per step (as the official code runs it). Same inputs as agile_from_geometry; returns
    ascending indices [B, k]. stats (a dict, optional) receives the number of host round-trips."""
    out, syncs = [], 0
    for dist_i, erank_i, attn_i in zip(dist, erank, attention):
        n = attn_i.shape[0]
        per_rank = erank_i.item() / erank_avg * tau_step
        by_attention = torch.sort(attn_i, descending=True, stable=True).indices
        rank_of = torch.empty_like(by_attention)
        rank_of[by_attention] = torch.arange(1, n + 1, device=by_attention.device)
        alive = torch.ones(n, dtype=torch.bool, device=dist.device)
        selected = []
        for token in by_attention.tolist():
            syncs += 1
            if not alive[token].item():
                continue
            if len(selected) == k:
                break
            selected.append(token)
            alive[token] = False
            syncs += 1
            tau = min(rank_of[token].item() * per_rank, tau_max)
            alive &= ~(dist_i[token] < tau)
        for token in by_attention.tolist():  # backfill by attention if the alive tokens ran out
            if len(selected) == k:
                break
            if token not in selected:
                selected.append(token)
        out.append(sorted(selected))
    if stats is not None:
        stats.update(syncs=syncs)
    return torch.tensor(out, dtype=torch.long, device=dist.device)


def agile_reference_loop(features, attention, k, **options):
    """AgilePruner by the straightforward per-token loop: features [B, N, D], attention [B, N] ->
    ascending indices [B, k] (k < N). Same geometry as `agile`; the walk is the loop."""
    options = {**AGILE_DEFAULTS, **options}
    dist, erank = token_geometry(features.float())
    return agile_reference_from_geometry(dist, erank, attention.float(), k, **options)


def agile_official(features, attention, k, erank_avg=90.0, tau_max=0.25, tau_step=0.01, **_):
    """The computation the official code runs (cvsp-lab/AgilePruner, llava_arch.py, as described in
    shared/research/agilepruner.md sections 1.1 and 2.3; our code, not theirs), for timing against `agile`:
    the erank on its own (float32, mean-centred, Gram X X^T, eigvalsh, the official epsilons: the same
    arithmetic as metrics.effective_rank, written out), then the N x N cosine-distance matrix of the
    rows / (L2 norm + 1e-8) as a second product (geometry.cosine_distance), then the per-token loop with a
    host round-trip per step. Its distances are the direct formula, not token_geometry's, so its indices
    can differ from `agile`'s where a distance lies within float32 rounding (~1e-7) of a threshold.
    features [B, N, D], attention [B, N] -> ascending indices [B, k]."""
    x = features.float()
    centred = x - x.mean(dim=1, keepdim=True)
    s = torch.linalg.eigvalsh(centred @ centred.transpose(1, 2)).clamp(min=1e-12).sqrt()
    p = s / (s.sum(dim=-1, keepdim=True) + 1e-12)
    erank = torch.exp(-(p * torch.log(p + 1e-12)).sum(dim=-1))
    dist = cosine_distance(x)
    return agile_reference_from_geometry(dist, erank, attention.float(), k, erank_avg, tau_max, tau_step)
