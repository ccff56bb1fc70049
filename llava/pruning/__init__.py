"""Visual token pruning: pure tensor functions (no model, tokenizer or file I/O), registered by name."""
from . import metrics
from .config import BUDGET_SCOPES, PruningConfig, add_pruning_args
from .methods import METHODS, agile_reference_loop, fastv_select, register
from .merging import MERGERS, visionzip_merge
from .metrics import attention_entropy, effective_rank
from .select import prune_visual_tokens, select_visual_tokens

__all__ = ["MERGERS", "visionzip_merge", "METHODS", "BUDGET_SCOPES", "PruningConfig", "add_pruning_args", "agile_reference_loop", "attention_entropy",
           "effective_rank", "fastv_select", "metrics", "prune_visual_tokens", "register", "select_visual_tokens"]
