"""LLaVA with visual token pruning. `from llava import LlavaLlamaForCausalLM` works as upstream; the
model classes are imported lazily so `llava.constants` and friends stay light."""


def __getattr__(name):
    if name in ("LlavaLlamaForCausalLM", "LlavaMistralForCausalLM", "LlavaConfig"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'llava' has no attribute {name!r}")
