"""Visual token pruning: pure tensor functions (no model, tokenizer or file I/O), registered by name.

    select_visual_tokens(method, features [B,N,D], attention [B,N] | None, k, **options) -> [B, k] indices
    prune_visual_tokens(method, features, attention, k, **options_and_signals)
        -> PrunedTokens(features [B, k, D], indices [B, k'])   (the one call the model makes before the LLM)
    METHODS[name].fn(step, k, **options)                        (in-decoder methods, called by the model's hook)

Every method lives in llava/pruning/methods/ (agile in agile.py) and declares its stage and options with
@register (registry.py); adding one = one file.
"""
from . import metrics
from .agile import (agile_from_geometry, agile_official, agile_reference_from_geometry, agile_reference_loop,
                    agile_select, agile_walk)
from .config import BUDGET_SCOPES, PruningConfig, add_pruning_args
from .geometry import COMPLEXITY_RULES, cosine_distance, token_geometry
from .methods import fastv_select, visionzip_tokens
from .metrics import attention_entropy, effective_rank
from .registry import METHODS, OPTIONS, STAGES, Option, default_options, register
from .select import PrunedTokens, prune_visual_tokens, select_visual_tokens

DEFAULT_OPTIONS = default_options()  # every declared option's default, {name: value}

__all__ = [
    "BUDGET_SCOPES", "COMPLEXITY_RULES", "DEFAULT_OPTIONS", "METHODS", "OPTIONS", "Option", "PrunedTokens",
    "PruningConfig", "STAGES", "add_pruning_args", "agile_from_geometry", "agile_official",
    "agile_reference_from_geometry", "agile_select",
    "agile_reference_loop", "agile_walk", "attention_entropy", "cosine_distance", "default_options",
    "effective_rank", "fastv_select", "metrics", "prune_visual_tokens", "register", "select_visual_tokens",
    "token_geometry", "visionzip_tokens",
]
