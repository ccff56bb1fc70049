"""The front door: `select_visual_tokens` (indices) and `prune_visual_tokens` (the tokens the LLM gets)."""
from contextlib import contextmanager
from typing import NamedTuple

import torch

from . import agile  # noqa: F401 (registers "agile")
from . import methods  # noqa: F401 (registers the other methods)
from .registry import COMPLEXITY_RULES, DEFAULT_OPTIONS, METHODS, check_k


class PrunedTokens(NamedTuple):
    """What `prune_visual_tokens` returns; unpacks as `features, indices = ...`.

    features: [B, k, D] the visual embeddings for the LLM (input dtype), in raster order; for a merge
        method (visionzip) [CLS], the dominant patches, then the merged contextual tokens.
    indices: [B, k'] ascending indices of the input tokens kept as they are: k' = k for selection
        methods, the number of dominant patches for visionzip (merged tokens have no index), N when
        nothing was pruned.
    """

    features: torch.Tensor
    indices: torch.Tensor


@contextmanager
def float32_math(device):
    """Selection math in true float32: autocast off and, if the process allows TF32 / reduced-precision
    float32 matmuls (e.g. training with --tf32), full precision while selecting (restored after)."""
    precision = torch.get_float32_matmul_precision()
    if precision != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        if device.type in ("cuda", "cpu"):
            with torch.autocast(device.type, enabled=False):
                yield
        else:
            yield
    finally:
        if precision != "highest":
            torch.set_float32_matmul_precision(precision)


def _known():
    return ", ".join(sorted(METHODS))


def _check_options(options):
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"Unknown pruning option(s) {sorted(unknown)}; known: {', '.join(sorted(DEFAULT_OPTIONS))}")
    merged = {**DEFAULT_OPTIONS, **options}
    if merged["complexity_rule"] not in COMPLEXITY_RULES:
        raise ValueError(f"complexity_rule must be one of {', '.join(COMPLEXITY_RULES)}, "
                         f"got {merged['complexity_rule']!r}")
    for name in ("erank_avg", "tau_step", "tau_max"):
        if not merged[name] > 0:
            raise ValueError(f"{name} must be > 0, got {merged[name]!r}")
    for name in ("important_ratio", "attention_share", "share_min", "share_max"):
        if not 0.0 <= merged[name] <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {merged[name]!r}")
    if merged["share_min"] > merged["share_max"]:
        raise ValueError(f"share_min ({merged['share_min']}) must not exceed share_max ({merged['share_max']})")
    if not merged["share_slope"] >= 0:
        raise ValueError(f"share_slope must be >= 0 (complexity_rule=inverse flips the sign), "
                         f"got {merged['share_slope']!r}")
    return merged


def _check(method, features, attention, k, options):
    """Validate everything up front; returns (method spec, k as int, all options)."""
    if method not in METHODS:
        raise ValueError(f"Unknown pruning method {method!r}; known: {_known()}")
    spec = METHODS[method]
    if not isinstance(features, torch.Tensor) or features.ndim != 3 or not features.is_floating_point():
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a floating-point tensor [B, N, D], got {shape}")
    if features.shape[1] == 0:
        raise ValueError("features has no tokens (N = 0)")
    if attention is None and spec.needs_attention:
        raise ValueError(f"pruning method {method!r} needs the CLS attention row, but attention is None")
    if attention is not None and tuple(attention.shape) != tuple(features.shape[:2]):
        raise ValueError(f"attention must be [B, N] = {tuple(features.shape[:2])} to match features, "
                         f"got {tuple(attention.shape)}")
    if spec.in_llm:
        raise ValueError(f"{method!r} selects inside the language model (at --fastv-layer); "
                         "the model calls llava.pruning.fastv_select there, not this function")
    k = k if (spec.keeps_all and k is None) else check_k(k)
    return spec, k, _check_options(options)


def select_visual_tokens(method, features, attention, k, **options):
    """Indices of the k visual tokens to keep, ascending (raster order): LongTensor [B, k].

    method: a registered name (`llava.pruning.METHODS`); features [B, N, D] (post-projector);
    attention [B, N] (CLS->patch row, head-averaged, not renormalised) or None for methods that need
    none; k >= N (and method "none") keeps every token: arange(N). Options (defaults in
    DEFAULT_OPTIONS): erank_avg, tau_max, tau_step (agile); important_ratio (vispruner),
    attention_share (mix), complexity_rule, share_slope, share_min, share_max (both hybrids);
    seed (random). The math runs in float32 whatever the input dtype; the result is deterministic
    and row b of a batch equals the selection for image b alone. Bad input -> ValueError.
    """
    spec, k, opts = _check(method, features, attention, k, options)
    if spec.merges:
        raise ValueError(f"{method!r} merges tokens, so it has no index selection; call prune_visual_tokens")
    b, n, _ = features.shape
    if spec.keeps_all or k >= n:
        return torch.arange(n, device=features.device).expand(b, n)
    attn = None if attention is None else attention.float()
    with float32_math(features.device):
        return spec.fn(features.float(), attn, k, **opts).sort(dim=-1).values


def prune_visual_tokens(method, features, attention, k, *, cls_features=None, merge_keys=None, **options):
    """The visual embeddings the LLM gets, and which input tokens they are: PrunedTokens(features [B, k, D],
    indices [B, k']) (a NamedTuple; `kept, idx = prune_visual_tokens(...)`).

    Selection methods: features.gather(indices) with indices = select_visual_tokens(...) (k' = k).
    visionzip: [CLS], the dominant patches (indices, raster order), then k - dominant merged contextual
    tokens; the CLS token counts toward k. Our tower gives patch features only, so pass the CLS state
    as cls_features [B, D] (in the same space as features) to keep it; without it the CLS slot goes to
    one more dominant patch. merge_keys [B, N, d] is the metric for the contextual merge (VisionZip uses
    the select layer's head-averaged keys); default: the features themselves. See
    methods.visionzip_tokens.
    k >= N (or method "none"): nothing is pruned; the input features are returned as they are with
    indices arange(N), so the model's output is bit-identical to the unpruned one.
    """
    spec, k, opts = _check(method, features, attention, k, options)
    b, n, d = features.shape
    if (cls_features is not None or merge_keys is not None) and not spec.merges:
        raise ValueError(f"cls_features / merge_keys apply to merging methods only, not {method!r}")
    if spec.keeps_all or k >= n:
        return PrunedTokens(features, torch.arange(n, device=features.device).expand(b, n))
    if spec.merges:
        if cls_features is not None and tuple(cls_features.shape) != (b, d):
            raise ValueError(f"cls_features must be [B, D] = {(b, d)}, got {tuple(cls_features.shape)}")
        if merge_keys is not None and tuple(merge_keys.shape[:2]) != (b, n):
            raise ValueError(f"merge_keys must be [B, N, d] with [B, N] = {(b, n)}, got {tuple(merge_keys.shape)}")
        with float32_math(features.device):
            tokens, idx = spec.fn(features, attention.float(), k, cls_features=cls_features, keys=merge_keys, **opts)
        return PrunedTokens(tokens, idx)
    idx = select_visual_tokens(method, features, attention, k, **options)
    return PrunedTokens(features.gather(1, idx[:, :, None].expand(-1, -1, d)), idx)
