"""LLaVA on Mistral (upstream names: LlavaMistralConfig, LlavaMistralModel, LlavaMistralForCausalLM)."""
from transformers import AutoConfig, AutoModelForCausalLM, MistralConfig, MistralForCausalLM, MistralModel
from transformers.models.mistral.modeling_mistral import MistralPreTrainedModel

from ..llava_arch import LlavaMetaModel
from .llava_llama import LlavaCausalLMMixin


class LlavaMistralConfig(MistralConfig):
    model_type = "llava_mistral"


class LlavaMistralModel(LlavaMetaModel, MistralModel):
    config_class = LlavaMistralConfig


class LlavaMistralForCausalLM(LlavaCausalLMMixin, MistralForCausalLM):
    config_class = LlavaMistralConfig

    def __init__(self, config):
        MistralPreTrainedModel.__init__(self, config)
        self._build(config, LlavaMistralModel)


AutoConfig.register("llava_mistral", LlavaMistralConfig)
AutoModelForCausalLM.register(LlavaMistralConfig, LlavaMistralForCausalLM)
