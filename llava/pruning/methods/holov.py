"""HoloV (obananas/HoloV, `llava/model/utils.py` `HoloV`): a holistic budget over "crops", then the
tokens of largest CLS attention inside each crop. After the projector.

The released LLaVA rule, per image (features X [N, D] post-projector, a [N] the select layer's
CLS->patch attention, head mean, softmax over the 1+N keys, not renormalised):

1. Crops: P = holov_crops (16) contiguous chunks of the raster sequence (1-D, not 2-D tiles), sizes
   N // P, the first N % P of them one larger (P = N when N < P: empty crops are skipped).
2. Crop score, for a crop of n >= 2 tokens: S = cosine matrix of X / (|X| + 1e-6) with the diagonal
   zeroed; m_i = sum_j S_ij / (n-1); v_i = sum_j (S_ij - m_i)^2 / (n-1) (the zeroed diagonal
   included); t_i = 1000 a_i + alpha * v_i * mean|1000 a| / (mean|v| + 1e-6); score = mean t. A crop of
   one token scores its raw a (no 1000 factor: an official quirk). alpha = 0.09.
3. Budget: w = score / (sum score + 1e-6); alloc = floor(w k); the k - sum alloc crops of largest w get
   one more each.
4. Each crop keeps its min(alloc, n) tokens of largest attention.
The variance term barely matters: the rescaling makes mean(alpha v scaled) = alpha mean(1000 a) * M / (M
+ 1e-6), M = mean v, so every crop score is (1 + alpha) mean(1000 a) up to that 1e-6 (notes §5.4);
it is reproduced exactly here anyway, since it can move a floor at the margin.

Deviations: ties go to the lower index (torch.topk's order is unspecified); where a crop's allocation
exceeds its size the official pads the output with zero vectors (fewer than k real tokens), here the
shortfall is filled with the tokens of largest attention not yet kept, so k real tokens come out; the
official returns the tokens crop by crop, attention-descending inside a crop, here indices (the
front door puts them in raster order).
"""
import torch

from ..geometry import attention_order
from ..registry import Option, register

HOLOV_EPS = 1e-6


def crop_layout(n, crops, device=None):
    """HoloV's crops of a raster sequence of n tokens: (crop id per token [n], crop sizes [P], crop starts
    [P]) with P = min(crops, n), sizes n // P and the first n % P one larger."""
    p = min(crops, n)
    size, extra = divmod(n, p)
    sizes = torch.full((p,), size, dtype=torch.long, device=device)
    sizes[:extra] += 1
    starts = torch.cumsum(sizes, 0) - sizes
    return torch.repeat_interleave(torch.arange(p, device=device), sizes), sizes, starts


def crop_scores(features, attention, sizes, starts, alpha):
    """HoloV's crop scores [B, P] (float32): the mean over the crop of 1000 a_i + alpha * (the rescaled
    variance of token i's cosine similarities to the other tokens of its crop); a one-token crop scores
    its attention. features [B, N, D], attention [B, N]."""
    p, width = sizes.shape[0], int(sizes.max())
    offs = torch.arange(width, device=features.device)
    valid = offs[None, :] < sizes[:, None]  # [P, L]
    pos = (starts[:, None] + offs[None, :]).clamp(max=features.shape[1] - 1)  # [P, L]
    x = features / (features.norm(dim=-1, keepdim=True) + HOLOV_EPS)
    x = x[:, pos]  # [B, P, L, D]
    eye = torch.eye(width, dtype=torch.bool, device=features.device)
    pair = valid[:, :, None] & valid[:, None, :]  # [P, L, L]
    sim = (x @ x.transpose(-1, -2)).masked_fill(~pair | eye, 0.0)  # [B, P, L, L]
    denom = (sizes - 1).clamp(min=1).to(features.dtype)[:, None]  # [P, 1]
    mean_sim = sim.sum(dim=-1) / denom  # [B, P, L]
    var_sim = ((sim - mean_sim[..., None]) ** 2).masked_fill(~pair[None], 0.0).sum(dim=-1) / denom
    a = attention[:, pos] * 1e3  # [B, P, L]
    count = sizes.to(features.dtype)
    mean_abs = lambda t: t.abs().masked_fill(~valid, 0.0).sum(dim=-1) / count  # noqa: E731
    scaling = mean_abs(a) / (mean_abs(var_sim) + HOLOV_EPS)  # [B, P]
    token_scores = a + alpha * var_sim * scaling[..., None]
    scores = token_scores.masked_fill(~valid, 0.0).sum(dim=-1) / count
    single = (sizes <= 1)[None].expand_as(scores)
    return torch.where(single, attention[:, starts], scores)


def crop_allocation(scores, k):
    """HoloV's budget: w = scores / (sum + 1e-6), floor(w k) per crop, then one more for each of the
    k - sum(floor) crops of largest w (ties to the lower crop). scores [B, P] -> LongTensor [B, P]."""
    weights = scores / (scores.sum(dim=-1, keepdim=True) + HOLOV_EPS)
    alloc = (weights * k).floor().long()
    remaining = k - alloc.sum(dim=-1, keepdim=True)
    rank = torch.sort(weights, dim=-1, descending=True, stable=True).indices.argsort(dim=-1)
    return alloc + (rank < remaining).long()


HOLOV_CROPS = Option("holov_crops", 16, kind=int, low=1,
                     help="HoloV: number of contiguous raster chunks the budget is spread over (official "
                          "num_patches = 16)")
HOLOV_ALPHA = Option("holov_alpha", 0.09, kind=float, low=0.0,
                     help="HoloV: weight of the similarity-variance term in the crop scores (official 0.09; "
                          "nearly inert, see llava/pruning/methods/holov.py)")


@register("holov", stage="post-projector", needs_attention=True, options=(HOLOV_CROPS, HOLOV_ALPHA),
          summary="HoloV: CLS-attention budget spread over raster chunks, top attention inside each")
def holov(features, attention, k, holov_crops=16, holov_alpha=0.09):
    """HoloV as released for LLaVA (see the module docstring for the rule).

    features [B, N, D] post-projector (float32); attention [B, N] the select layer's CLS->patch
    attention, head mean, softmax over the 1+N keys, CLS dropped, not renormalised (what HoloV's tower
    returns); k kept tokens. Returns indices [B, k]: each crop's allocated tokens of largest attention
    (ties to the lower index), then, if some crop was allocated more tokens than it has (the official
    pads zeros), the tokens of largest attention not yet kept. k >= N keeps all (arange(N)).
    """
    b, n, _ = features.shape
    if k >= n:
        return torch.arange(n, device=features.device).expand(b, n)
    features, attention = features.float(), attention.float()
    crop_id, sizes, starts = crop_layout(n, holov_crops, features.device)
    alloc = crop_allocation(crop_scores(features, attention, sizes, starts, holov_alpha), k)  # [B, P]
    # tokens grouped by crop (crops are contiguous and in order), attention-descending inside a crop
    ranked = attention_order(attention)  # [B, N]
    grouped = ranked.gather(1, torch.sort(crop_id[ranked], dim=-1, stable=True).indices)
    rank_in_crop = torch.arange(n, device=features.device) - starts[crop_id]  # position p holds crop crop_id[p]
    keep = rank_in_crop[None, :] < alloc[:, crop_id]  # [B, N] over the grouped order
    kept = torch.zeros(b, n, dtype=torch.bool, device=features.device).scatter_(1, grouped, keep)
    # k tokens: the kept ones first, then the rest by attention (fills what crop overflow left short)
    by_attention_kept_first = ranked.gather(
        1, torch.sort(kept.gather(1, ranked).to(torch.uint8), dim=-1, descending=True, stable=True).indices)
    return by_attention_kept_first[:, :k]
