"""Visual token pruning: pure tensor functions (no model, tokenizer or file I/O), registered by name.

    select_visual_tokens(method, features [B,N,D], attention [B,N] | None, k, **options) -> [B, k] indices
    prune_visual_tokens(method, features, attention, k, *, cls_features=None, merge_keys=None, **options)
        -> PrunedTokens(features [B, k, D], indices [B, k'])   (the one call the model makes)
    fastv_select(last_token_attention [B, N], k) -> [B, k]      (FastV, called inside the decoder)

Methods live in METHODS (registry.py); adding one = one function decorated with @register("name").
"""
from . import metrics
from .agile import agile_from_geometry, agile_reference_from_geometry, agile_reference_loop, agile_walk
from .config import BUDGET_SCOPES, PruningConfig, add_pruning_args
from .merging import MERGERS, visionzip_merge
from .methods import cosine_distance, fastv_select, token_geometry, visionzip_tokens
from .metrics import attention_entropy, effective_rank
from .registry import COMPLEXITY_RULES, DEFAULT_OPTIONS, METHODS, register
from .select import PrunedTokens, prune_visual_tokens, select_visual_tokens

__all__ = [
    "BUDGET_SCOPES", "COMPLEXITY_RULES", "DEFAULT_OPTIONS", "MERGERS", "METHODS", "PrunedTokens", "PruningConfig",
    "add_pruning_args", "agile_from_geometry", "agile_reference_from_geometry", "agile_reference_loop", "agile_walk",
    "attention_entropy", "cosine_distance", "effective_rank", "fastv_select", "metrics", "prune_visual_tokens",
    "register", "select_visual_tokens", "token_geometry", "visionzip_merge", "visionzip_tokens",
]
