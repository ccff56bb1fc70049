"""transformers' own LLaVA checkpoints (llava-hf: `LlavaForConditionalGeneration`, LLaVA-1.5;
`LlavaNextForConditionalGeneration`, LLaVA-1.6) as this project's models, converted on load.

A llava-hf folder is recognised from its config.json: `model_type` "llava" or "llava_next" with
`text_config` and `vision_config` (the original LLaVA uploads say "llava" too, but have neither). It is
read with transformers' own class (which knows both the published key layout and its own), and its
modules are moved, not copied, into `LlavaLlamaForCausalLM` / `LlavaMistralForCausalLM`:

    language_model (embeddings, layers, norm, rotary) and lm_head  -> the LLM
    multi_modal_projector.linear_1 / act / linear_2               -> mm_projector (mlp2x_gelu)
    vision_tower (CLIPVisionModel)                                 -> the CLIP tower, run to the select layer
    image_newline (LLaVA-NeXT)                                     -> image_newline

The LLaVA settings come from the config: `vision_feature_layer` -> mm_vision_select_layer,
`vision_feature_select_strategy` default/full -> patch/cls_patch, `image_grid_pinpoints`, anyres with
spatial_unpad for LLaVA-NeXT, and the conversation template by model family (`conv_mode`). Images are
preprocessed as upstream LLaVA does (pad to square for 1.5, anyres for 1.6), not as llava-hf's processor
does (it centre-crops LLaVA-1.5's images): the models were trained on upstream's preprocessing.
The tower's weights stay in the model (`unfreeze_mm_vision_tower`), and a save writes the original
layout with the tower's config beside it (`clip-vision-tower/`), so the recipes train it further.
"""
import os

import torch
import torch.nn as nn

TOWER_FOLDER = "clip-vision-tower"  # where a save puts the tower's config and image processor


def is_llava_hf(cfg):
    """A transformers-native LLaVA config (dict): llava / llava_next with text and vision sub-configs."""
    return cfg.get("model_type") in ("llava", "llava_next") and "text_config" in cfg and "vision_config" in cfg


def template_for(text_config):
    """The conversation template of the model family (as upstream's eval scripts use them), from the
    text_config dict of a llava-hf config."""
    if text_config.get("model_type") == "mistral":
        return "mistral_instruct"
    if text_config.get("vocab_size") == 64000:  # Yi-34B (llava-v1.6-34b)
        return "chatml_direct"
    return "vicuna_v1"


def llava_config(hf_config):
    """Our LlavaConfig / LlavaMistralConfig for a llava-hf config."""
    from llava.model.language_model.llava_llama import LlavaConfig
    from llava.model.language_model.llava_mistral import LlavaMistralConfig

    text, vision = hf_config.text_config, hf_config.vision_config
    strategy = getattr(hf_config, "vision_feature_select_strategy", "default")
    layer = hf_config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"vision_feature_layer {layer!r}: only one select layer is supported")
    if getattr(hf_config, "projector_hidden_act", "gelu") != "gelu":
        raise ValueError(f"projector_hidden_act {hf_config.projector_hidden_act!r}: only gelu is supported")
    next_ = hf_config.model_type == "llava_next"
    values = text.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path"):
        values.pop(key, None)
    values.update(
        mm_vision_tower=TOWER_FOLDER, unfreeze_mm_vision_tower=True, mm_hidden_size=vision.hidden_size,
        mm_projector_type="mlp2x_gelu", mm_vision_select_layer=layer,
        mm_vision_select_feature={"default": "patch", "full": "cls_patch"}[strategy],
        mm_use_im_start_end=False, mm_use_im_patch_token=False, use_mm_proj=True,
        image_aspect_ratio="anyres" if next_ else "pad",
        mm_patch_merge_type="spatial_unpad" if next_ else "flat",
        tokenizer_padding_side="right", conv_mode=template_for(text.to_dict()),
    )
    if next_:
        values["image_grid_pinpoints"] = [list(p) for p in hf_config.image_grid_pinpoints]
    cls = LlavaMistralConfig if text.model_type == "mistral" else LlavaConfig
    config = cls(**values)
    config._attn_implementation = text._attn_implementation
    return config


def image_processor_for(path, vision_config):
    """CLIP's PIL image processor (upstream's pipeline) with the checkpoint's normalisation and the
    tower's resolution."""
    import json

    from llava.model.multimodal_encoder.clip_encoder import image_processor_class

    side = vision_config.image_size
    settings = {}
    file = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(file):
        with open(file) as f:
            saved = json.load(f)
        settings = {k: saved[k] for k in ("image_mean", "image_std", "rescale_factor") if k in saved}
    return image_processor_class()(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                   **settings)


def load_llava_hf(path, hf_config_dict, **kwargs):
    """(model, image_processor) for a llava-hf folder; kwargs go to transformers' from_pretrained (dtype,
    device_map, quantization_config, attn_implementation)."""
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    from llava.model.builder import from_pretrained, model_class_for

    hf_cls = LlavaNextForConditionalGeneration if hf_config_dict["model_type"] == "llava_next" \
        else LlavaForConditionalGeneration
    hf = from_pretrained(hf_cls, path, **kwargs)
    config = llava_config(hf.config)
    config.unfreeze_mm_vision_tower = False  # build the tower empty: it is hf's, moved in below
    with torch.device("meta"):
        model = model_class_for(config)(config)
    config.unfreeze_mm_vision_tower = True  # ... and saved inside the checkpoint
    inner, lm = model.get_model(), hf.model.language_model
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        setattr(inner, name, getattr(lm, name))
    model.lm_head = hf.lm_head
    proj = hf.model.multi_modal_projector
    inner.mm_projector = nn.Sequential(proj.linear_1, nn.GELU(), proj.linear_2)
    if hasattr(hf.model, "image_newline"):
        inner.image_newline = hf.model.image_newline
    tower = inner.get_vision_tower()
    tower.vision_tower = hf.model.vision_tower
    tower.image_processor = image_processor_for(path, hf.config.vision_config)
    tower.is_loaded = True
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{path}: the conversion left weights without values: {left[:5]}")
    model.generation_config = hf.generation_config
    model.config._name_or_path = path
    return model.eval(), tower.image_processor
