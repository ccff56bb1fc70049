"""The front door: `select_visual_tokens` (indices) and `prune_visual_tokens` (the tokens the LLM gets)."""
from contextlib import contextmanager
from typing import NamedTuple

import torch

from . import agile  # noqa: F401 (registers "agile")
from . import methods  # noqa: F401 (registers the other methods)
from .registry import METHODS, check_k


class PrunedTokens(NamedTuple):
    """What `prune_visual_tokens` returns; unpacks as `features, indices = ...`.

    features: [B, k, D] the visual tokens (input dtype), in raster order; for a pre-projector method
        its own order (visionzip: [CLS], the dominant patches, then the merged contextual tokens).
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


def _split(spec, kwargs):
    """kwargs -> (the method's own options, checked and with defaults; its signals). Anything else is an error."""
    signals = {name: kwargs[name] for name in spec.inputs if name in kwargs and kwargs[name] is not None}
    options = {name: v for name, v in kwargs.items() if name not in spec.inputs}
    return spec.validate(options), signals


def _check(method, features, attention, k, kwargs):
    """Validate everything up front; returns (method spec, k as int or None, own options, signals)."""
    if method not in METHODS:
        raise ValueError(f"Unknown pruning method {method!r}; known: {_known()}")
    spec = METHODS[method]
    if spec.stage == "decoder":
        raise ValueError(f"{method!r} prunes inside the language model (the model's decoder hook runs it, "
                         "llava/model/decoder_pruning.py), not from the visual features")
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
    if k is None and (spec.stage == "none" or spec.count_is_optional(spec.validate(
            {n: v for n, v in kwargs.items() if n not in spec.inputs}))):
        pass
    else:
        k = check_k(k)
    options, signals = _split(spec, kwargs)
    return spec, k, options, signals


def select_visual_tokens(method, features, attention, k, **options):
    """Indices of the k visual tokens to keep, ascending (raster order): LongTensor [B, k].

    method: a registered post-projector method (`llava.pruning.METHODS`); features [B, N, D] (post-projector);
    attention [B, N] (CLS->patch row, head-averaged, not renormalised) or None for methods that need none;
    k >= N (and method "none") keeps every token: arange(N). Keyword arguments: the method's own options
    (their defaults in its declaration; README: Pruning methods) and the extra signals it declares (e.g.
    states= for vispruner). The math runs in float32 whatever the input dtype; the result is deterministic
    and row b of a batch equals the selection for image b alone. Bad input -> ValueError.
    """
    spec, k, opts, signals = _check(method, features, attention, k, options)
    if spec.stage == "pre-projector":
        raise ValueError(f"{method!r} builds new tokens before the projector, so it has no index selection; "
                         "call prune_visual_tokens")
    b, n, _ = features.shape
    if spec.stage == "none" or k >= n:
        return torch.arange(n, device=features.device).expand(b, n)
    attn = None if attention is None else attention.float()
    with float32_math(features.device):
        return spec.fn(features.float(), attn, k, **signals, **opts).sort(dim=-1).values


def prune_visual_tokens(method, features, attention, k, **options):
    """The visual tokens that go on, and which input tokens they are: PrunedTokens(features [B, k, D],
    indices [B, k']) (a NamedTuple; `kept, idx = prune_visual_tokens(...)`).

    Post-projector methods: features.gather(indices) with indices = select_visual_tokens(...) (k' = k).
    Pre-projector methods (visionzip, prumerge, prumerge_plus) build their tokens from the features given
    (the tower's select-layer states in the model) and the signals they declare (visionzip: cls_state
    [B, D], counted in k, and keys [B, N, d], the merge metric); indices are the tokens kept as they are.
    A method that decides its own count (k=None with prumerge) returns lists, one tensor per image.
    k >= N (or method "none"): nothing is pruned; the input features are returned as they are with
    indices arange(N), so the model's output is bit-identical to the unpruned one.
    """
    spec, k, opts, signals = _check(method, features, attention, k, options)
    b, n, d = features.shape
    if spec.stage == "none" or (k is not None and k >= n):
        return PrunedTokens(features, torch.arange(n, device=features.device).expand(b, n))
    if spec.stage == "pre-projector":
        cls_state, keys = signals.get("cls_state"), signals.get("keys")
        if cls_state is not None and tuple(cls_state.shape) != (b, d):
            raise ValueError(f"cls_state must be [B, D] = {(b, d)}, got {tuple(cls_state.shape)}")
        if keys is not None and tuple(keys.shape[:2]) != (b, n):
            raise ValueError(f"keys must be [B, N, d] with [B, N] = {(b, n)}, got {tuple(keys.shape)}")
        attn = None if attention is None else attention.float()
        with float32_math(features.device):
            tokens, idx = spec.fn(features, attn, k, **signals, **opts)
        return PrunedTokens(tokens, idx)
    idx = select_visual_tokens(method, features, attention, k, **options)
    return PrunedTokens(features.gather(1, idx[:, :, None].expand(-1, -1, d)), idx)
