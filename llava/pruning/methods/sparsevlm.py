"""SparseVLM (ICML'25, Gumpest/SparseVLMs): text-guided pruning inside the decoder, in three stages, with
token recycling; and SparseVLM+ ("v2.0 mode" of the repository's main branch).

sparsevlm (v1.5 branch = main's default v1 mode):
  Raters: on the layer-0 input embeddings, S = softmax over the text axis of V T^T (V = the image tokens,
    T = every token after the image span), averaged over the image rows; the raters are the text tokens
    whose score is above the row's mean.
  Stage s prunes the OUTPUT of layer l_s in (2, 6, 15), i.e. it acts before layer l_s + 1. Relevance of each
    current image token = layer l_s's causal softmax attention (mean over all heads), averaged over the
    rater rows. Keep min(table[K][s], n - 1) tokens (n = current image count), ties to the lower index,
    kept in raster order.
  Recycling: of the dropped tokens, the int(0.3 * n_dropped) + 1 most relevant are clustered (their layer
    l_s output states) by DPC-kNN into int(n_sel / 10) + 1 clusters (distances / sqrt(C), density exp(-mean
    squared distance to the cluster_num nearest, self included), delta = distance to the nearest denser
    token (or the largest distance), centers = top cluster_num of delta * density, every token joins its
    nearest center); each cluster becomes the plain mean of its members (divided by count + 1e-6, as the
    official). The merged tokens are inserted right after the kept image tokens, in center order, and
    count as image tokens for the next stages.
  Determinism: the official adds U(0, 1e-6) noise from the global RNG to the densities "so that no tokens
    have the same density"; exact ties are common (with cluster_num = 2 the density is a function of the
    nearest-neighbour distance, equal for mutual nearest neighbours). Here there is no noise: in a tie the
    token earlier in the candidate order (the dropped tokens by descending relevance, ties to the lower
    position) counts as denser, which is one of the outcomes the noise gives, made fixed. (In the official
    fp16 runs the noise is below fp16 resolution, so ties stay unbroken there and, with cluster_num = 2, the
    closest pair become both centers; that behaviour is not reproduced.)
  Positions: the official v1 renumbers position ids contiguously after each stage ("renumber": True).
sparsevlm_v2 (main, USE_VERSION=2_0): the same raters and stages, but the attention probabilities are
  divided element-wise by the RoPE "gravity" (q.k/sqrt(d) of all-ones q and k after RoPE at the current
  positions = (2/sqrt(d)) sum_f cos((i - j) theta_f)), only the 14 heads with the largest rater->image sum
  of the corrected attention are averaged, there is no recycling, and original positions are kept (gaps).

Budget K: the key of the official per-stage tables (SPARSEVLM_TABLES / SPARSEVLM_V2_TABLES), the
repository's "Equal Tokens" average; the image count actually entering layers 16-31 at K = 64 is 18 (v1).
96 is the main branch's row (the v1.5 branch has 64 / 128 / 192).
"""
import torch

from ..registry import Option, register

SPARSEVLM_LAYERS = (2, 6, 15)  # the layers whose outputs are pruned
SPARSEVLM_TABLES = {64: (66, 30, 17), 96: (238, 48, 26), 128: (303, 110, 36), 192: (300, 200, 110)}
SPARSEVLM_V2_TABLES = {64: (66, 34, 20), 96: (246, 54, 28), 128: (238, 108, 60), 192: (300, 200, 118)}
V2_HEADS = 14  # SparseVLM+ averages the 14 heads with the most rater->image attention

SPARSEVLM_LAYERS_OPTION = Option("sparsevlm_layers", SPARSEVLM_LAYERS, "sparsevlm/sparsevlm_v2: the decoder "
                                 "layers whose outputs are pruned, stage by stage (official: 2,6,15; fewer layers use the first stages "
                                 "of the budget table, for models with few layers)", kind="ints", low=0,
                                 decoder_layer="output")
SPARSEVLM_RECYCLE = Option("sparsevlm_recycle", True, "sparsevlm: merge part of the dropped tokens into "
                           "recycled tokens (DPC-kNN), as the official v1.5 does", kind=bool)


# ---- pure rules ------------------------------------------------------------------------------------------
def sparsevlm_raters(visual, text):
    """visual [B, N, C], text [B, M, C] (layer-0 embeddings) -> rater mask [B, M]: softmax over the text
    axis of visual @ text^T, averaged over the visual rows, above its row mean. float32."""
    score = (visual.float() @ text.float().transpose(1, 2)).softmax(dim=2).mean(dim=1)  # [B, M]
    return score > score.mean(dim=-1, keepdim=True)


def sparsevlm_relevance(attention, raters):
    """attention [B, M, n] (text rows -> current image columns, head-averaged), raters [B, M] bool -> the
    mean over the rater rows, [B, n]."""
    w = raters.to(attention.dtype)
    return (attention * w[:, :, None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1)


def rope_gravity(positions_q, positions_k, inv_freq):
    """SparseVLM+'s RoPE gravity: q.k / sqrt(d) of all-ones q and k rotated at positions_q [B, Q] and
    positions_k [B, T] with the frequencies inv_freq [d/2]: (2/sqrt(d)) sum_f cos((i - j) theta_f), built as
    the official does (rotated vectors, then the product). [B, Q, T] float32."""
    inv_freq = inv_freq.float()
    d = 2 * inv_freq.shape[0]

    def rotated_ones(pos):
        angle = pos.float()[..., None] * inv_freq  # [B, P, d/2]
        c, s = angle.cos(), angle.sin()
        return torch.cat([c - s, c + s], dim=-1)  # ones * cos + rotate_half(ones) * sin

    return rotated_ones(positions_q) @ rotated_ones(positions_k).transpose(1, 2) / d ** 0.5


def sparsevlm_v2_relevance(attention, gravity, raters, heads=V2_HEADS):
    """attention [B, H, M, n] per-head probabilities (text rows -> current image columns), gravity [B, M, n],
    raters [B, M] -> [B, n]: attention / gravity, the `heads` heads with the largest sum over rater rows and
    image columns (ties to the lower head), their mean, then the mean over the rater rows."""
    corrected = attention.float() / gravity[:, None].float()
    w = raters.to(corrected.dtype)[:, None, :, None]
    per_head = (corrected * w).sum(dim=(2, 3))  # [B, H]
    top = torch.sort(per_head, dim=-1, descending=True, stable=True).indices[:, :min(heads, per_head.shape[1])]
    chosen = corrected.gather(1, top[:, :, None, None].expand(-1, -1, *corrected.shape[2:])).mean(dim=1)
    return sparsevlm_relevance(chosen, raters)


def sparsevlm_keep(relevance, keep):
    """The `keep` most relevant image tokens, ties to the lower index, ascending: [B, keep]; and the
    dropped ones ordered by descending relevance (ties to the lower index): [B, n - keep]."""
    order = torch.sort(relevance, dim=-1, descending=True, stable=True).indices
    return order[:, :keep].sort(dim=-1).values, order[:, keep:]


def pairwise_distance(x, rows=16):
    """Euclidean distances [B, S, S] of x [B, S, C] as |x_i - x_j| elementwise (the official arithmetic, so
    equal distances stay exactly equal), `rows` rows at a time to bound the B x rows x S x C temporary."""
    return torch.cat([(x[:, i:i + rows, None] - x[:, None]).norm(dim=-1) for i in range(0, x.shape[1], rows)],
                     dim=1)


def dpc_knn_merge(x, cluster_num):
    """DPC-kNN clustering of x [B, S, C] into cluster_num clusters, each merged into the plain mean of its
    members (sum / (count + 1e-6), as SparseVLM). Returns (merged [B, cluster_num, C] float32, centers
    [B, cluster_num] in center order, assignment [B, S]). Deterministic: instead of the official U(0, 1e-6)
    density noise, a tie in density makes the lower index of x the denser token (one of the outcomes the
    noise gives, fixed); ties in center score go to the lower index, a token equidistant to two centers
    joins the earlier center."""
    x = x.float()
    b, s, c = x.shape
    dist = pairwise_distance(x) / c ** 0.5  # [B, S, S]
    knn = dist.topk(cluster_num, dim=-1, largest=False).values
    density = (-(knn ** 2).mean(dim=-1)).exp()  # [B, S]
    idx = torch.arange(s, device=x.device)
    d_j, d_i = density[:, None, :], density[:, :, None]
    denser = (d_j > d_i) | ((d_j == d_i) & (idx[None, :] < idx[:, None])[None])  # [b, i, j]: j is denser
    dist_max = dist.flatten(1).amax(dim=-1)[:, None, None]
    delta = torch.where(denser, dist, dist_max).amin(dim=-1)
    score = delta * density
    centers = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :cluster_num]
    to_center = dist.gather(1, centers[:, :, None].expand(-1, -1, s))  # [B, cluster_num, S]
    assign = to_center.argmin(dim=1)
    assign.scatter_(1, centers, torch.arange(cluster_num, device=x.device).expand(b, cluster_num))
    counts = torch.zeros(b, cluster_num, device=x.device).scatter_add_(1, assign, torch.ones(b, s, device=x.device))
    merged = torch.zeros(b, cluster_num, c, device=x.device).scatter_add_(1, assign[:, :, None].expand(-1, -1, c), x)
    return merged / (counts[:, :, None] + 1e-6), centers, assign


def recycle_tokens(dropped, states):
    """SparseVLM's recycling: of the n_dropped = dropped.shape[1] dropped tokens (`dropped` [B, n_dropped]
    indices into the current image span, most relevant first), the int(0.3 * n_dropped) + 1 first are
    clustered into int(n_sel / 10) + 1 clusters by dpc_knn_merge on their states (states [B, n, C]: the
    current image tokens' layer outputs). -> merged [B, clusters, C] float32."""
    n_sel = int(dropped.shape[1] * 0.3) + 1
    clusters = int(n_sel / 10) + 1
    cand = dropped[:, :n_sel]
    x = states.gather(1, cand[:, :, None].expand(-1, -1, states.shape[-1]))
    return dpc_knn_merge(x, clusters)[0]


def sparsevlm_counts(k, n_image=576, recycle=True, tables=None):
    """Image tokens after each stage (kept + recycled) for a table key k: a list of 3 counts."""
    tables = SPARSEVLM_TABLES if tables is None else tables
    out, n = [], n_image
    for target in tables[k]:
        keep = min(target, n - 1)
        extra = int((int((n - keep) * 0.3) + 1) / 10) + 1 if recycle else 0
        n = keep + extra
        out.append(n)
    return out


def table_count(tables, k, stage, name):
    if k not in tables:
        raise ValueError(f"{name} takes --visual-token-num in {', '.join(map(str, sorted(tables)))} (the official "
                         f"per-stage tables), got {k}")
    return tables[k][stage]


# ---- decoder adapters ------------------------------------------------------------------------------------
def check_layers(options):
    layers = options["sparsevlm_layers"]
    if not 1 <= len(layers) <= 3 or list(layers) != sorted(set(layers)):
        raise ValueError(f"--sparsevlm-layers must be one to three increasing layers (budget stages 1-3 in order; "
                         f"official: 2,6,15), got {','.join(map(str, layers))}")


def _stage_inputs(step, layers=SPARSEVLM_LAYERS):
    """(stage, layer l, image start, current count, text query positions, rater mask) at a SparseVLM
    boundary, or None elsewhere."""
    layer = step.layer - 1
    if layer not in layers:
        return None
    start, length = step.image
    t_start, t_end = step.text_after_image
    shift = step.embeds.shape[1] - step.hidden.shape[1]  # only image tokens change count
    n0 = length + shift
    e = step.embeds
    raters = sparsevlm_raters(e[:, start:start + n0], e[:, t_start + shift:t_end + shift])
    queries = torch.arange(t_start, t_end, device=step.hidden.device)
    return tuple(layers).index(layer), layer, start, length, n0, queries, raters


@register("sparsevlm", stage="decoder", options=(SPARSEVLM_LAYERS_OPTION, SPARSEVLM_RECYCLE), check=check_layers,
          summary="SparseVLM (v1.5): text raters' attention prunes after layers 2/6/15, with token recycling")
def sparsevlm(step, k, sparsevlm_layers=SPARSEVLM_LAYERS, sparsevlm_recycle=True):
    """Acts before layers 3, 7 and 16 (on the outputs of layers 2, 6, 15). Needs step.layer, step.hidden
    (layer l's output: recycled states), step.previous_hidden (layer l's input), step.image,
    step.text_after_image, step.embeds and step.attention(l, step.previous_hidden, text positions). Returns
    None or {"keep": [B, k_s] indices into the current image span, ascending, "insert": [B, m, C] recycled
    tokens (hidden dtype) to place right after the kept ones (and count in the image span from then on) or
    None, "renumber": True}."""
    found = _stage_inputs(step, sparsevlm_layers)
    if found is None:
        return None
    stage, layer, start, length, n0, queries, raters = found
    if k >= n0:
        return None
    keep = min(table_count(SPARSEVLM_TABLES, k, stage, "sparsevlm"), length - 1)
    attn = step.attention(layer, step.previous_hidden, queries)[:, :, start:start + length].float()  # [B, M, n]
    kept, dropped = sparsevlm_keep(sparsevlm_relevance(attn, raters), keep)
    insert = None
    if sparsevlm_recycle:
        insert = recycle_tokens(dropped, step.hidden[:, start:start + length]).to(step.hidden.dtype)
    return {"keep": kept, "insert": insert, "renumber": True}


@register("sparsevlm_v2", stage="decoder", options=(SPARSEVLM_LAYERS_OPTION,), check=check_layers,
          summary="SparseVLM+ (v2.0): gravity-corrected attention of 14 heads, no recycling, positions kept")
def sparsevlm_v2(step, k, sparsevlm_layers=SPARSEVLM_LAYERS):
    """As sparsevlm, with SparseVLM+'s relevance. Needs in addition per-head probabilities
    step.attention(l, hidden, queries, per_head=True) -> [B, H, Q, T], step.positions and step.rope_inv_freq
    (the rotary embedding's inv_freq, [head_dim / 2]). Returns None or {"keep": [B, k_s], "insert": None,
    "renumber": False}."""
    found = _stage_inputs(step, sparsevlm_layers)
    if found is None:
        return None
    stage, layer, start, length, n0, queries, raters = found
    if k >= n0:
        return None
    if getattr(step, "rope_inv_freq", None) is None:
        raise ValueError("sparsevlm_v2 needs the decoder hook to give step.rope_inv_freq and per-head "
                         "step.attention(..., per_head=True)")
    keep = min(table_count(SPARSEVLM_V2_TABLES, k, stage, "sparsevlm_v2"), length - 1)
    attn = step.attention(layer, step.previous_hidden, queries, per_head=True)[..., start:start + length]
    pos = step.positions
    gravity = rope_gravity(pos[:, queries], pos[:, start:start + length], step.rope_inv_freq)
    kept, _ = sparsevlm_keep(sparsevlm_v2_relevance(attn, gravity, raters), keep)
    return {"keep": kept, "insert": None, "renumber": False}
