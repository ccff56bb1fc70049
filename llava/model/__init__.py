from .language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from .language_model.llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM", "LlavaMistralConfig", "LlavaMistralForCausalLM"]
