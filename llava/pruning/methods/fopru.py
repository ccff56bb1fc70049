"""FoPru (Focal Pruning, arXiv 2411.14164), as implemented in dongxianzhe/hydrainfer
(`focal_prunning`, the FoPru authors' group): token significance from the patch<->patch attention
logits of the select layer, then the top tokens (rank) or the top raster rows (row), in raster order.

The HydraInfer rule, per image: L = the select layer's attention logits q_i . k_j / sqrt(head_dim)
(pre-softmax, float32), averaged over the heads, restricted to the patch block (CLS row and column
dropped, nothing renormalised), L [N, N]. Two significance vectors: the column mean c_j = mean_i L_ij
(how much patch j is looked at) and the row mean r_i = mean_j L_ij; the one with the larger variance
(torch.var) is used, the row mean on an exact tie (HydraInfer's current `focal_prunning`).
rank: the k tokens of largest significance. row: the significance summed over each raster row of the
sqrt(N) x sqrt(N) grid, the rows of largest sum kept whole.

The logits are linear in q and k, so the head mean is q_i . k_j / (H sqrt(head_dim)) over all C dims,
and c = mean_i(q_i) . k_j / (H sqrt(head_dim)), r_i = q_i . mean_j(k_j) / (H sqrt(head_dim)): both come
from the layer's q / k projections in O(N C), with no N x N map (the same numbers as HydraInfer's up to
float32 rounding).

Deviations: ties go to the lower index (torch.sort's order is unspecified); row with a k that is not a
multiple of sqrt(N) (HydraInfer's function cannot do it; its module takes floor(sqrt(N) * ratio) rows):
the k // sqrt(N) best rows whole, then the remaining k mod sqrt(N) tokens by rank among the others.
"""
import math

import torch

from ..geometry import attention_order, true_positions
from ..registry import Option, register


def focal_significance(select_qk):
    """FoPru's significance [B, N] (float32) from select_qk = (q, k, num_heads): the select layer's
    q_proj / k_proj outputs [B, 1+N, C] (CLS first, unscaled). The column mean or the row mean of the
    head-averaged patch<->patch logits, whichever has the larger variance (the row mean on a tie)."""
    q, k, heads = select_qk
    scale = 1.0 / (heads * math.sqrt(q.shape[-1] // heads))
    qp, kp = q[:, 1:].float(), k[:, 1:].float()  # patches only
    col = (qp.mean(dim=1, keepdim=True) @ kp.transpose(1, 2))[:, 0] * scale  # [B, N] mean over queries
    row = (qp @ kp.mean(dim=1)[:, :, None])[:, :, 0] * scale  # [B, N] mean over keys
    use_col = col.var(dim=-1) > row.var(dim=-1)
    return torch.where(use_col[:, None], col, row)


def focal_rows(significance, k):
    """FoPru's row strategy with exactly k tokens: [B, N] significance (N a square) -> [B, k] ascending.
    The k // side raster rows of largest significance sum (ties to the upper row) whole, then the
    k mod side tokens of largest significance outside them."""
    b, n = significance.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"fopru_strategy=row needs a square token grid, got N = {n}")
    n_rows, rest = divmod(k, side)
    rows = torch.sort(significance.view(b, side, side).sum(dim=-1), dim=-1, descending=True,
                      stable=True).indices[:, :n_rows]  # [B, n_rows]
    chosen = torch.zeros(b, side, dtype=torch.bool, device=significance.device).scatter_(1, rows, True)
    chosen = chosen.repeat_interleave(side, dim=1)  # [B, N]
    if rest:
        ranked = attention_order(significance.masked_fill(chosen, float("-inf")))[:, :rest]
        chosen = chosen.scatter(1, ranked, True)
    return true_positions(chosen, k)


FOPRU_STRATEGY = Option("fopru_strategy", "rank", kind=str, choices=("rank", "row"),
                        help="FoPru: rank keeps the K most significant tokens; row keeps whole raster rows "
                             "of largest significance (K // 24 rows at 576 tokens), the rest by rank")


@register("fopru", stage="post-projector", inputs=("select_qk",), options=(FOPRU_STRATEGY,),
          summary="FoPru: significance = patch<->patch attention (column or row mean), top tokens or rows")
def fopru(features, attention, k, select_qk=None, fopru_strategy="rank"):
    """FoPru (HydraInfer's focal_prunning). features [B, N, D] (only their shape is used: the projector
    is per token, so selecting after it keeps the same tokens as HydraInfer's selection before it);
    attention: unused. select_qk: (q, k, num_heads), the select layer's self-attention q_proj and
    k_proj outputs [B, 1+N, C] (CLS first, unscaled; num_heads the layer's head count), from which the
    head-averaged patch<->patch logits' column and row means are computed (see focal_significance).
    Returns indices [B, k] ascending: rank = the k most significant tokens (ties to the lower index);
    row = see focal_rows. k >= N keeps all.
    """
    b, n, _ = features.shape
    if k >= n:
        return torch.arange(n, device=features.device).expand(b, n)
    if select_qk is None:
        raise ValueError("fopru needs the select_qk signal (the select layer's q_proj / k_proj outputs)")
    q, kk, _ = select_qk
    if q.ndim != 3 or tuple(q.shape) != tuple(kk.shape) or tuple(q.shape[:2]) != (b, n + 1):
        raise ValueError(f"select_qk must hold q, k [B, 1+N, C] with [B, N] = {(b, n)}, got {tuple(q.shape)}, "
                         f"{tuple(kk.shape)}")
    significance = focal_significance(select_qk)
    if fopru_strategy == "row":
        return focal_rows(significance, k)
    return attention_order(significance)[:, :k].sort(dim=-1).values
