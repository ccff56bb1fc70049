"""Token merging on the vision tower's own states, before the projector (how VisionZip itself runs).

`prune_visual_tokens("visionzip", ...)` merges whatever features it is given (post-projector in the
model's selection path, CLS optional); the model's merge path instead calls MERGERS[name] with the
select layer's hidden states (CLS first) and keys, and projects the result. Both use
methods.visionzip_tokens, so the rule is written once.
"""
from .methods import VISIONZIP_DOMINANT_SHARE, visionzip_tokens  # noqa: F401 (re-exported)

MERGERS = {}


def register_merger(name):
    def wrap(fn):
        MERGERS[name] = fn
        return fn

    return wrap


@register_merger("visionzip")
def visionzip_merge(hidden, attention, keys, k, dominant=None):
    """VisionZip on the select layer: hidden [B, 1+N, C] states with CLS first (pre-projector), attention
    [B, N] CLS->patch, keys [B, 1+N, d] that layer's keys averaged over heads, k tokens out (CLS
    counts). Returns [B, k, C]: CLS, the top (dominant - 1) patches in raster order, then the contextual
    tokens; dominant defaults to round(k * 54/64). See methods.visionzip_tokens."""
    tokens, _ = visionzip_tokens(hidden[:, 1:], attention, k, cls_features=hidden[:, 0], keys=keys[:, 1:],
                                 dominant=dominant)
    return tokens
