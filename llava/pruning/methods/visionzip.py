"""VisionZip: dominant tokens by CLS attention plus contextual tokens merged from the rest, on the tower's
select-layer states before the projector (how VisionZip itself runs)."""
import torch

from ..geometry import attention_order, true_positions
from ..registry import register

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


@register("visionzip", stage="pre-projector", needs_attention=True, inputs=("cls_state", "keys"),
          summary="VisionZip: dominant tokens by CLS attention plus merged contextual tokens (K counts the CLS)")
def merge_visionzip(states, attention, k, cls_state=None, keys=None):
    """VisionZip on the tower's select layer: states [B, N, C] patch states (pre-projector), attention [B, N]
    CLS->patch, cls_state [B, C] the CLS state (counts toward k) or None, keys [B, N, d] the layer's keys
    averaged over heads (the merge metric) or None for the states themselves. Returns (tokens [B, k, C],
    dominant patch indices [B, k']); see visionzip_tokens."""
    return visionzip_tokens(states, attention, k, cls_features=cls_state, keys=keys)
