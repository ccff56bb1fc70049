"""LLaVA on LLaMA / Vicuna (upstream names: LlavaConfig, LlavaLlamaModel, LlavaLlamaForCausalLM)."""
import os
from contextlib import contextmanager

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from ..compat import model_cache_kwargs, pop_cache
from ..decoder_pruning import pruned_decoder_forward
from ..llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaConfig(LlamaConfig):
    model_type = "llava_llama"


class LlavaLlamaModel(LlavaMetaModel, LlamaModel):
    config_class = LlavaConfig


def positions_from_mask(attention_mask, seq_len):
    """Position ids that skip left padding: [B, seq_len] for the last seq_len columns of the mask."""
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 1)
    return positions[:, -seq_len:]


class LlavaCausalLMMixin(LlavaMetaForCausalLM):
    """forward/generate shared by the LLaMA and Mistral variants."""

    # Checkpoints saved by LLaVA's training hold the CLIP tower's weights too; as upstream, they are not
    # used (the tower loads from mm_vision_tower) unless unfreeze_mm_vision_tower builds it in the model.
    _keys_to_ignore_on_load_unexpected = [r"^model\.vision_tower\."]

    def _build(self, config, inner_model_cls):
        """What XForCausalLM.__init__ does, with the LLaVA inner model (and no throw-away plain one)."""
        self.model = inner_model_cls(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        images=None,
        image_sizes=None,
        return_dict=None,
        **kwargs,
    ):
        # generate hands the KV cache over as `cache` (transformers >= 5.24) or `past_key_values`
        past_key_values = pop_cache(past_key_values, kwargs)
        if inputs_embeds is None and images is not None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds, labels) = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes
                )
            )
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            seq_len = (inputs_embeds if inputs_embeds is not None else input_ids).shape[1]
            position_ids = positions_from_mask(attention_mask, seq_len)
        if inputs_embeds is None and images is None and (past_key_values is None
                                                         or past_key_values.get_seq_length() == 0):
            self._decoder_pruning = None  # a new prompt without an image: nothing to prune inside the LLM
        if self.decoder_pruning_pending():  # an in-decoder method: the decoder layers run in decoder_pruning
            cfg = self.pruning_config
            if labels is not None or self.training:
                raise ValueError(f"--pruning-method {cfg.method} prunes inside the LLM at inference only; train "
                                 "with a method that prunes before the LLM")
            if inputs_embeds is None:
                inputs_embeds = self.get_model().embed_tokens(input_ids)
            records = self.pruning_records if cfg.pruning_stats else None
            return pruned_decoder_forward(
                self, cfg.spec.fn, cfg.options(), cfg.visual_token_num, self._decoder_pruning, inputs_embeds,
                attention_mask, position_ids, past_key_values, use_cache, kwargs.get("logits_to_keep", 0), records,
                left_padding=getattr(self.config, "tokenizer_padding_side", "right") == "left")
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **model_cache_kwargs(past_key_values),
            **kwargs,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save (its progress bar only for over 1 GB of weights); a model converted from
        llava-hf also gets its tower's config and image processor in save_directory/clip-vision-tower (its
        weights are in the checkpoint), the original layout the loader and the training recipes read."""
        from llava.utils import progress_bars

        from ..hf_convert import TOWER_FOLDER

        size = sum(p.numel() * p.element_size() for p in self.parameters())
        with progress_bars(size > 2**30):
            super().save_pretrained(save_directory, *args, **kwargs)
        tower = self.get_vision_tower()
        if getattr(self.config, "mm_vision_tower", None) == TOWER_FOLDER and tower is not None and tower.is_loaded:
            folder = os.path.join(save_directory, TOWER_FOLDER)
            tower.vision_tower.config.save_pretrained(folder)
            tower.image_processor.save_pretrained(folder)

    @torch.no_grad()
    def generate(self, inputs=None, images=None, image_sizes=None, **kwargs):
        """Upstream contract: returns only the newly generated token ids (the prompt goes in as embeddings)."""
        kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        if "inputs_embeds" in kwargs:
            raise NotImplementedError("`inputs_embeds` is not supported")
        self._decoder_pruning = None  # in-decoder methods: set again by the splice below when this prompt has an image
        if images is not None:
            (_, _, attention_mask, _, inputs_embeds, _) = self.prepare_inputs_labels_for_multimodal(
                inputs, None, attention_mask, None, None, images, image_sizes=image_sizes
            )
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)
        with self._max_new_tokens_only(kwargs):
            return super().generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    @contextmanager
    def _max_new_tokens_only(self, kwargs):
        """LLaVA's generation_config.json carries max_length 4096 (the context size); a call that asks for
        max_new_tokens means that length alone, so the checkpoint's max_length is set aside for the call
        (transformers would otherwise warn on every call that both are set)."""
        gen = self.generation_config
        saved = gen.max_length
        if kwargs.get("max_new_tokens") is not None and kwargs.get("max_length") is None \
                and kwargs.get("generation_config") is None:
            gen.max_length = None
        try:
            yield
        finally:
            gen.max_length = saved


class LlavaLlamaForCausalLM(LlavaCausalLMMixin, LlamaForCausalLM):
    config_class = LlavaConfig

    def __init__(self, config):
        LlamaPreTrainedModel.__init__(self, config)
        self._build(config, LlavaLlamaModel)


AutoConfig.register("llava_llama", LlavaConfig)
AutoModelForCausalLM.register(LlavaConfig, LlavaLlamaForCausalLM)
