"""LLaVA-PruMerge and PruMerge+ (42Shawn/LLaVA-PruMerge, `clip_encoder.py`): keep the tokens the CLIP
tower's last layer attends to from its CLS (IQR outliers; PruMerge+ adds a spatial grid), merge every
pruned token's state into the kept ones, and add one token holding the attention-weighted sum of the
pruned states. Before the projector, on the select layer's patch states.

The official rule, step by step (per image; the official code pools the IQR over the whole batch and
only runs with batch 1, here everything is per image so a batch gives what one image at a time does):

1. Attention: the CLIP tower's LAST layer's q_proj / k_proj outputs q, k [1+N, C] (CLS first, before
   CLIP's internal scaling), treated as ONE head over all C dims: a = softmax(q_cls . k^T / sqrt(C))
   over the 1+N keys, CLS column dropped, not renormalised -> a [N]. (Not the model's 16-head
   attention, and not the select layer's: see `last_layer_cls_attention`.)
2. Adaptive count: c = the number of values of a above Q3 + 1.5 * (Q3 - Q1) (numpy's linear
   percentiles); the official count int(N * c / N) equals c. The c tokens of largest a, descending.
3. PruMerge+ only: step = int(1 / (c / N)), s = int(step / 3); the grid 0, s, 2s, ... < N - 1 (the
   official hard-codes 575 = N - 1 for N = 576), the grid tokens not already kept are appended in
   ascending order.
4. Merge: each kept token i (a "centre") takes the 32 tokens (kept or not, i excluded) whose last-layer
   keys are most cosine-similar to its key (keys L2-normalised, eps 1e-12) and becomes
   x_i + sum_j a_j x_j over them (x = select-layer patch states; original x_j; no normalisation).
5. One extra token: sum over the non-kept j of a_j x_j, appended last.
Output (official): [top-c by a, descending] + [grid, ascending] + [extra].

Deviations, all documented in the functions: ties go to the lower index (torch.topk's order is
unspecified; the official runs in fp16, where equal attention values are common); a PruMerge+ image
with no outlier (the official divides by zero) is treated as c = 1; the neighbour count is
min(32, N - 1) (the official needs N >= 33); and by default (prumerge_order="raster") the centres come
out in raster order, the extra token last ("official" keeps the official order).
"""
import torch

from ..geometry import attention_order, true_positions
from ..registry import Option, check_k, register

PRUMERGE_NEIGHBOURS = 32  # tokens merged into each kept token (official constant)

PRUMERGE_ORDER = Option(
    "prumerge_order", "raster", kind=str, choices=("raster", "official"),
    help="order of the merged tokens that prumerge / prumerge_plus hand to the projector: raster (kept "
         "tokens in raster order, the extra merged token last) or official (by attention, descending, then "
         "PruMerge+'s grid tokens ascending, then the extra token)")


def last_layer_cls_attention(q, k):
    """PruMerge's attention: q, k [B, 1+N, C] (the last CLIP layer's q_proj / k_proj outputs, CLS first,
    unscaled) -> a [B, N] float32 = softmax over the 1+N keys of q_cls . k / sqrt(C) as one C-dim head,
    CLS column dropped, not renormalised."""
    kf = k.float()
    scores = (q[:, :1].float() @ kf.transpose(1, 2))[:, 0] * kf.shape[-1] ** -0.5  # [B, 1+N]
    return scores.softmax(dim=-1)[:, 1:]


def iqr_outlier_count(attention):
    """Per image, the number of values above Q3 + 1.5 * IQR: attention [B, N] -> LongTensor [B].

    Q1 and Q3 are numpy's default (linear) percentiles, interpolated in float64 from the (float32)
    values, as numpy's percentile does; the count is the official adaptive count."""
    a = attention.float().double()
    s = a.sort(dim=-1).values
    n = s.shape[-1]

    def percentile(p):
        h = p * (n - 1)
        lo = int(h)
        hi = min(lo + 1, n - 1)
        t = h - lo
        diff = s[:, hi] - s[:, lo]
        # numpy's _lerp: a + d*t below t = 0.5, b - d*(1 - t) from it on
        return s[:, hi] - diff * (1 - t) if t >= 0.5 else s[:, lo] + diff * t

    q1, q3 = percentile(0.25), percentile(0.75)
    fence = q3 + 1.5 * (q3 - q1)
    return (a > fence[:, None]).sum(dim=-1)


def _normalised_keys(last_qk, n):
    q, k, _ = last_qk
    if q.ndim != 3 or tuple(q.shape) != tuple(k.shape) or q.shape[1] != n + 1:
        raise ValueError(f"last_qk must hold q, k [B, 1+N, C] with N = {n}, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}")
    keys = k[:, 1:].float()
    keys = keys / keys.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # F.normalize
    return last_layer_cls_attention(q, k), keys


def prumerge_merge(states, attention, keys, centres):
    """PruMerge's merge. states [B, N, C] (float32), attention [B, N] (PruMerge's last-layer CLS
    attention), keys [B, N, C'] L2-normalised last-layer keys, centres [B, m] distinct kept indices.

    Each centre i becomes x_i + sum_j a_j x_j over the min(32, N - 1) other tokens j whose keys are most
    cosine-similar to key_i (ties to the lower index); then one extra token sum over the non-centres j
    of a_j x_j. Returns [B, m + 1, C] float32, the centres in the given order, the extra token last."""
    b, n, _ = states.shape
    m = centres.shape[1]
    c_keys = keys.gather(1, centres[:, :, None].expand(-1, -1, keys.shape[-1]))
    sim = (c_keys @ keys.transpose(1, 2)).scatter(2, centres[:, :, None], float("-inf"))  # [B, m, N]
    nbr = torch.sort(sim, dim=-1, descending=True, stable=True).indices[..., :min(PRUMERGE_NEIGHBOURS, n - 1)]
    weights = torch.zeros_like(sim).scatter_(2, nbr, attention[:, None, :].expand(-1, m, -1).gather(2, nbr))
    merged = states.gather(1, centres[:, :, None].expand(-1, -1, states.shape[-1])) + weights @ states
    kept = torch.zeros(b, n, dtype=torch.bool, device=states.device).scatter_(1, centres, True)
    extra = (attention.masked_fill(kept, 0.0)[:, None, :] @ states)  # [B, 1, C]
    return torch.cat([merged, extra], dim=1)


def _plus_grid(count, n):
    """PruMerge+'s adaptive grid for c outliers among n tokens: arange(0, n - 1, s) with s = int(int(1 /
    (c / n)) / 3) (the official float arithmetic); c = 0 is taken as 1 (the official divides by zero).
    s >= 1 always: at most about a quarter of the values lie above Q3 + 1.5 IQR, so c < n / 3."""
    count = max(count, 1)
    step = int(1 / (count / n))
    return torch.arange(0, n - 1, max(int(step / 3), 1))


def _adaptive(states, attention, keys, plus, order):
    """Adaptive PruMerge(+), per image: lists of tokens [k_i, C] and centre indices [k_i - 1]."""
    n = states.shape[1]
    counts = iqr_outlier_count(attention).tolist()  # the count decides shapes: one host sync per batch
    ranked = attention_order(attention)
    tokens, indices = [], []
    for i, count in enumerate(counts):
        if plus:
            top = ranked[i, :max(count, 1)]
            grid = _plus_grid(count, n).to(top.device)
            centres = torch.cat([top, grid[~torch.isin(grid, top)]])
        else:
            top = centres = ranked[i, :count]
        if order == "raster":
            centres = centres.sort().values
        tokens.append(prumerge_merge(states[i:i + 1], attention[i:i + 1], keys[i:i + 1], centres[None])[0])
        indices.append(centres)
    return tokens, indices


def _fixed_centres(attention, k, plus):
    """The k - 1 centres of the exact-k rule, [B, k - 1] (attention-descending, then the grid ascending)."""
    n = attention.shape[1]
    ranked = attention_order(attention)
    if not plus:
        return ranked[:, :k - 1]
    n_top = k // 2  # ceil((k - 1) / 2) by attention, the other floor((k - 1) / 2) on a grid
    n_grid = k - 1 - n_top
    top = ranked[:, :n_top]
    if n_grid == 0:
        return top
    chosen = torch.zeros_like(attention, dtype=torch.bool).scatter_(1, top, True)
    rest = true_positions(~chosen, n - n_top)  # the unchosen tokens, raster order
    pos = (2 * torch.arange(n_grid, device=attention.device) + 1) * (n - n_top) // (2 * n_grid)
    return torch.cat([top, rest[:, pos]], dim=1)


def _prumerge(states, k, last_qk, plus, order):
    if last_qk is None:
        raise ValueError("prumerge needs the last_qk signal (the last CLIP layer's q_proj / k_proj outputs)")
    b, n, _ = states.shape
    attention, keys = _normalised_keys(last_qk, n)
    x = states.float()
    if k is None:
        tokens, indices = _adaptive(x, attention, keys, plus, order)
        return [t.to(states.dtype) for t in tokens], indices
    k = check_k(k)
    if k >= n:
        return states, torch.arange(n, device=states.device).expand(b, n)
    centres = _fixed_centres(attention, k, plus)
    if order == "raster":
        centres = centres.sort(dim=-1).values
    return prumerge_merge(x, attention, keys, centres).to(states.dtype), centres


@register("prumerge_plus", stage="pre-projector", inputs=("last_qk",), options=(PRUMERGE_ORDER,), k_optional=True,
          summary="PruMerge+: last-layer CLS-attention IQR outliers plus a spatial grid, pruned tokens merged "
                  "in (adaptive count without K)")
def prumerge_plus(states, attention, k, last_qk=None, prumerge_order="raster"):
    """PruMerge+ (the official default, LLaVA-PruMerge's `token_prune_merge_advanced_plus`).

    states [B, N, C]: the select layer's patch states (pre-projector; the official merges the layer -2
    output, i.e. LLaVA's default mm_vision_select_layer). attention: unused (PruMerge computes its own
    from last_qk). last_qk: (q, k, num_heads), the CLIP tower's LAST layer's q_proj and k_proj outputs
    [B, 1+N, C] (CLS first, unscaled), computed on that layer's layer-norm'd input; num_heads is unused
    (the official treats q, k as one C-dim head). Math in float32.

    k=None (adaptive, the official behaviour): centres = the c IQR outliers of the last-layer CLS
    attention (descending) + PruMerge+'s grid tokens not among them (ascending), merged as the official;
    c differs per image, so this returns lists: tokens [(c_i + g_i + 1, C)] and centre indices
    [(c_i + g_i,)], one per image (official indices and tokens at batch 1, up to tie order).

    k given (no official equivalent; the official "training" branch keeps 2 * int(N r) + 1 tokens with
    a grid that may repeat kept tokens): exactly k tokens = k - 1 merged centres + the extra token. The
    centres are the ceil((k - 1) / 2) tokens of largest attention, then floor((k - 1) / 2) tokens evenly
    spaced in raster order among the others (positions floor((2j + 1) M / (2g)), j < g, of the M
    unchosen tokens), so no token is taken twice. Returns (tokens [B, k, C], centre indices [B, k - 1]);
    k >= N returns the states unchanged and arange(N).

    The indices are the centres each output token (but the last) was built on, in output order: every
    centre has its neighbours merged in, so no token is kept exactly as it was.
    """
    return _prumerge(states, k, last_qk, True, prumerge_order)


@register("prumerge", stage="pre-projector", inputs=("last_qk",), options=(PRUMERGE_ORDER,), k_optional=True,
          summary="PruMerge: last-layer CLS-attention IQR outliers with the pruned tokens merged in "
                  "(adaptive count without K)")
def prumerge(states, attention, k, last_qk=None, prumerge_order="raster"):
    """PruMerge (LLaVA-PruMerge's `token_prune_merge_advanced`).

    states [B, N, C]: the select layer's patch states (pre-projector; the official merges the layer -2
    output, i.e. LLaVA's default mm_vision_select_layer). attention: unused (PruMerge computes its own
    from last_qk). last_qk: (q, k, num_heads), the CLIP tower's LAST layer's q_proj and k_proj outputs
    [B, 1+N, C] (CLS first, unscaled), computed on that layer's layer-norm'd input; num_heads is unused
    (the official treats q, k as one C-dim head). Math in float32.

    k=None (adaptive, the official behaviour): centres = the c IQR outliers of the last-layer CLS
    attention (c = 0 gives the extra token only, as the official); returns lists: tokens
    [(c_i + 1, C)] and centre indices [(c_i,)], one per image.

    k given (the official non-adaptive branch keeps int(N r) + 1 tokens): exactly k tokens = the k - 1
    tokens of largest attention, merged, + the extra token (which counts toward k). Returns (tokens
    [B, k, C], centre indices [B, k - 1]); k >= N returns the states unchanged and arange(N).
    Indices as in prumerge_plus.
    """
    return _prumerge(states, k, last_qk, False, prumerge_order)
