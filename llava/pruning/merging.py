"""Token-merging methods: pure tensor functions that return new (merged) visual tokens.

They act on the vision tower's select-layer hidden states *before* the projector (as VisionZip does),
so the model projects their output. Registered in `MERGERS` by name.
"""
import torch

MERGERS = {}
VISIONZIP_DOMINANT_SHARE = 54 / 64  # VisionZip's 64-token setting: 54 dominant (CLS included) + 10 contextual


def register_merger(name):
    def wrap(fn):
        MERGERS[name] = fn
        return fn

    return wrap


@register_merger("visionzip")
def visionzip_merge(hidden, attention, keys, k, dominant=None):
    """VisionZip: dominant tokens (CLS + the top-attention patches) plus merged contextual tokens.

    hidden [B, 1+N, C] select-layer hidden states with CLS first (pre-projector); attention [B, N]
    CLS->patch attention; keys [B, 1+N, d] that layer's keys averaged over heads; k total tokens out.
    dominant (default round(k * 54/64)) counts the CLS token: CLS + the top (dominant - 1) patches, in
    raster order after CLS. The other tokens, in raster order, are merged into c = k - dominant
    contextual tokens: targets are every s-th of them (s = max(1, R // c)), each other token joins
    the target whose key is most cosine-similar, and a contextual token is its target's state plus
    the mean of its members' states (the target alone if none joined). Returns [B, k, C].
    """
    b, t, c_dim = hidden.shape
    n_dom = int(round(k * VISIONZIP_DOMINANT_SHARE)) if dominant is None else int(dominant)
    n_dom = max(1, min(n_dom, k))
    n_ctx = k - n_dom
    top = torch.sort(attention.float(), dim=-1, descending=True, stable=True).indices[:, : n_dom - 1] + 1
    is_dom = torch.zeros(b, t, dtype=torch.bool, device=hidden.device)
    is_dom[:, 0] = True
    is_dom.scatter_(1, top, True)
    dom_idx = is_dom.nonzero()[:, 1].view(b, n_dom)
    dominant_states = hidden.gather(1, dom_idx[:, :, None].expand(-1, -1, c_dim))
    if n_ctx == 0:
        return dominant_states
    rest_idx = (~is_dom).nonzero()[:, 1].view(b, t - n_dom)
    rest = hidden.gather(1, rest_idx[:, :, None].expand(-1, -1, c_dim))
    metric = keys.float().gather(1, rest_idx[:, :, None].expand(-1, -1, keys.shape[-1]))
    metric = metric / metric.norm(dim=-1, keepdim=True)
    r = rest.shape[1]
    step = max(1, r // n_ctx)
    target_pos = torch.arange(0, r, step, device=hidden.device)[:n_ctx]
    is_target = torch.zeros(r, dtype=torch.bool, device=hidden.device)
    is_target[target_pos] = True
    members = (~is_target).nonzero().flatten()
    sim = metric[:, members] @ metric[:, target_pos].transpose(1, 2)  # [B, members, targets]
    assign = sim.argmax(dim=-1)  # [B, members]
    sums = torch.zeros(b, target_pos.numel(), c_dim, device=hidden.device, dtype=torch.float32)
    sums.scatter_add_(1, assign[:, :, None].expand(-1, -1, c_dim), rest[:, members].float())
    counts = torch.zeros(b, target_pos.numel(), device=hidden.device).scatter_add_(
        1, assign, torch.ones_like(assign, dtype=torch.float32))
    mean = sums / counts.clamp(min=1)[:, :, None]
    contextual = (rest[:, target_pos].float() + mean).to(hidden.dtype)
    return torch.cat([dominant_states, contextual], dim=1)
