"""The front door: `select_visual_tokens` (indices) and `prune_visual_tokens` (the kept features)."""
import torch

from .methods import COMPLEXITY_RULES, DEFAULT_OPTIONS, METHODS


def _check(method, features, attention, k, options):
    if method not in METHODS:
        raise ValueError(f"Unknown pruning method {method!r}; known: {', '.join(sorted(METHODS) + ['none'])}")
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"Unknown pruning option(s) {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"visual token number k must be a positive integer, got {k!r}")
    if features.ndim != 3:
        raise ValueError(f"features must be [B, N, D], got shape {tuple(features.shape)}")
    spec = METHODS[method]
    if spec.in_llm:
        raise ValueError(f"{method!r} selects inside the language model; it has no visual-feature selection")
    if spec.merges:
        raise ValueError(f"{method!r} merges tokens; use llava.pruning.merging (it has no index selection)")
    if spec.needs_attention:
        if attention is None:
            raise ValueError(f"pruning method {method!r} needs the CLS attention row, but attention is None")
        if tuple(attention.shape) != tuple(features.shape[:2]):
            raise ValueError(f"attention must be [B, N] = {tuple(features.shape[:2])}, got {tuple(attention.shape)}")
    merged = {**DEFAULT_OPTIONS, **options}
    if merged["complexity_rule"] not in COMPLEXITY_RULES:
        raise ValueError(f"complexity_rule must be one of {COMPLEXITY_RULES}, got {merged['complexity_rule']!r}")
    for name in ("erank_avg", "tau_step"):
        if merged[name] <= 0:
            raise ValueError(f"{name} must be > 0, got {merged[name]}")
    for name in ("important_ratio", "attention_share"):
        if not 0.0 <= merged[name] <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {merged[name]}")
    return merged


def select_visual_tokens(method, features, attention, k, **options):
    """Indices of the k visual tokens to keep, ascending (raster order): LongTensor [B, k].

    features [B, N, D] (post-projector), attention [B, N] (CLS->patch row, head-averaged, not
    renormalised) or None for methods that need none. k >= N keeps every token. Options:
    erank_avg, tau_max, tau_step, important_ratio, attention_share, complexity_rule, share_slope,
    share_min, share_max, seed. Selection runs in float32 whatever the input dtype.
    """
    if method == "none":
        return torch.arange(features.shape[1], device=features.device).expand(features.shape[0], -1)
    merged = _check(method, features, attention, k, options)
    b, n, _ = features.shape
    if k >= n:
        return torch.arange(n, device=features.device).expand(b, n)
    attn = None if attention is None else attention.float()
    idx = METHODS[method].fn(features.float(), attn, k, **merged)
    return idx.sort(dim=-1).values


def prune_visual_tokens(method, features, attention, k, **options):
    """The kept visual embeddings [B, k, D] (input dtype) and their indices [B, k]."""
    idx = select_visual_tokens(method, features, attention, k, **options)
    if idx.shape[1] == features.shape[1]:
        return features, idx
    return features.gather(1, idx[:, :, None].expand(-1, -1, features.shape[2])), idx
