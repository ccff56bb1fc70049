"""The transformers 5.x API differences this package meets, decided once from the installed release.

transformers 5.24 renamed the decoder's `past_key_values` argument to `cache` (models, decoder layers,
`generate`'s model inputs and the output field); the old name still works there but warns, and goes in
5.40. Releases 5.17-5.23 know only `past_key_values`. The names are read from the installed classes'
own signatures, not from a version number, so every call passes the KV cache the way that release
expects and nothing warns.
"""
import inspect
import warnings
from contextlib import contextmanager

from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel


def _cache_name(fn):
    return "cache" if "cache" in inspect.signature(fn).parameters else "past_key_values"


MODEL_CACHE_ARG = _cache_name(LlamaModel.forward)  # the keyword of a decoder model's forward
LAYER_CACHE_ARG = _cache_name(LlamaDecoderLayer.forward)  # the keyword of one decoder layer's forward
OUTPUT_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def model_cache_kwargs(cache):
    """{name: cache} for a decoder model's (or a causal LM's) forward."""
    return {MODEL_CACHE_ARG: cache}


def layer_cache_kwargs(cache):
    """{name: cache} for one decoder layer's forward."""
    return {LAYER_CACHE_ARG: cache}


def pop_cache(past_key_values, kwargs):
    """The cache handed to a forward under either name (generate passes the installed release's name;
    upstream-style callers pass past_key_values). Removes the new name from kwargs."""
    cache = kwargs.pop("cache", None)
    return cache if cache is not None else past_key_values


def causal_lm_output(logits, cache):
    """A CausalLMOutputWithPast carrying `cache` in the installed release's field."""
    return CausalLMOutputWithPast(logits=logits, **{OUTPUT_CACHE_FIELD: cache})


def output_cache(outputs):
    """The cache a forward returned (the field is `cache` from 5.24 on, `past_key_values` before)."""
    return getattr(outputs, OUTPUT_CACHE_FIELD)


@contextmanager
def quiet_peft():
    """PEFT (0.21) reads `model.is_gradient_checkpointing`, which transformers 5.24 deprecated: a notice
    from inside PEFT that a user can do nothing about. Only that notice is silenced, only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*is_gradient_checkpointing.* is deprecated", FutureWarning)
        yield
