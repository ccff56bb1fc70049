"""AgilePruner (ICLR 2026): adaptive similarity thresholding, vectorised, and the per-token loop it replaces.

The rule, per image (notes: shared/research/agilepruner.md §2.3):
  1. erank = effective rank of the mean-centred features of all N visual tokens (the features given:
     post-projector for LLaVA), with the official epsilons (metrics.erank_from_gram).
  2. D = 1 - cosine similarity of the *un-centred* features (rows / (L2 norm + 1e-8)); both come from
     one N x N product (methods.token_geometry), D equal to the direct formula up to ~1e-7.
  3. Walk tokens by descending CLS attention (ties: lower token index first; the official code's
     argsort leaves ties unspecified). A token still alive is kept; it then kills every alive token j
     with D[i, j] < tau_i (strict), tau_i = min(order_i * (erank / erank_avg * tau_step), tau_max),
     order_i = its 1-based rank in the global attention order (pruned tokens still use up ranks).
  4. Stop at k kept. If the alive tokens run out first, backfill with the not-kept tokens in attention
     order. Output: k indices in raster order.
tau is computed in float64 (the official code uses Python floats) and compared with the float32
distances in float32, as a float32 tensor compared with a Python float is.
"""
import torch

from .geometry import ERANK_AVG, attention_order, token_geometry, true_positions
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


@register("agile", needs_attention=True, options=AGILE_OPTIONS,
          summary="AgilePruner: attention order with erank-adaptive similarity suppression")
def select_agile(features, attention, k, **options):
    """AgilePruner: keep tokens by descending CLS attention, each kept token suppressing the alive tokens
    within cosine distance tau_i = min(order_i * erank/erank_avg * tau_step, tau_max); backfill by
    attention; see the module docstring for the exact rule and `agile_walk` for the vectorised walk."""
    dist, erank = token_geometry(features)
    return agile_from_geometry(dist, erank, attention, k, **options)


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
