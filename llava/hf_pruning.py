"""Visual-token pruning for transformers' own LLaVA classes, switched on in place.

    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from llava.hf_pruning import enable_pruning, disable_pruning
    from llava.pruning import PruningConfig

    model = LlavaForConditionalGeneration.from_pretrained("llava-hf/llava-1.5-7b-hf", dtype=torch.float16,
                                                          device_map="cuda")
    processor = AutoProcessor.from_pretrained("llava-hf/llava-1.5-7b-hf")   # batches: padding_side="left"
    enable_pruning(model, PruningConfig(method="agile", visual_token_num=64))
    inputs = processor(images=image, text="USER: <image>\\nDescribe the image. ASSISTANT:", return_tensors="pt")
    out = model.generate(**inputs.to(model.device), max_new_tokens=64, do_sample=False)
    print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    disable_pruning(model)                                   # back to all 576 visual tokens, bit-identical

What happens: at prefill, the image features (post-projector, `model.model.get_image_features`) are
reduced to K = config.visual_token_num per image by `llava.pruning.select_visual_tokens` (kept tokens
in raster order), and each image's run of N placeholder tokens in input_ids / attention_mask / labels
is cut to its first K, so the language model sees K image embeddings per image and the cache holds the
shortened sequence. `generate` returns the *original* prompt followed by the new tokens, so slicing
with `inputs["input_ids"].shape[1]` keeps working; `model(**inputs)` returns logits over the shortened
sequence (len(input_ids) - (N - K) per image). Attention-based methods get the CLS->patch attention row
of the vision tower's select layer, captured with forward hooks on that layer's q/k projections.

Not supported: LlavaNextForConditionalGeneration (anyres; NotImplementedError) and any other class;
methods that prune inside the LLM (fastv) or merge tokens (visionzip) (ValueError); `inputs_embeds`
or explicit `position_ids` together with `pixel_values` at full length, `image_sizes` (Pixtral-style
towers), precomputed `mm_encoder_outputs` (used as given, unpruned); attention-based methods need a
CLIP-style tower with a CLS token, an int `vision_feature_layer` and strategy "default"; rows of one
batch must hold the same number of images. Untested: prefill_chunk_size, beam search. PruningConfig's
budget_scope and pruning_stats are ignored (one view per image; `pruning_state(model).last_indices` holds
the latest kept indices). `method="none"` (or K >= N) changes nothing.
"""
import functools
import inspect

import torch

from llava.model.multimodal_encoder.clip_encoder import cls_attention_row
from llava.pruning import METHODS, PruningConfig, select_visual_tokens

__all__ = ["enable_pruning", "disable_pruning", "pruning_state"]

_STATE = "_llava_hf_pruning"
_MISSING = object()


class HFPruningState:
    """What enable_pruning installed on a model; `last_indices` holds the kept indices [images, K] of the
    latest pruned forward (ascending), for inspection."""

    def __init__(self, config, saved):
        self.config = config
        self.saved = saved  # attribute name -> the instance attribute it replaced (or _MISSING)
        self.last_indices = None
        self.last_attention = None


def pruning_state(model):
    """The HFPruningState of a model with pruning on, else None."""
    return model.__dict__.get(_STATE)


def _check_model(model):
    from transformers import LlavaForConditionalGeneration

    try:
        from transformers import LlavaNextForConditionalGeneration
    except ImportError:  # pragma: no cover
        LlavaNextForConditionalGeneration = ()
    if LlavaNextForConditionalGeneration and isinstance(model, LlavaNextForConditionalGeneration):
        raise NotImplementedError("enable_pruning does not support LlavaNextForConditionalGeneration (LLaVA-1.6 "
                                  "anyres) yet: only LlavaForConditionalGeneration (LLaVA-1.5 style)")
    if not isinstance(model, LlavaForConditionalGeneration):
        raise TypeError(f"enable_pruning needs a transformers LlavaForConditionalGeneration, got {type(model).__name__}")


def _check_config(config):
    if not isinstance(config, PruningConfig):
        raise TypeError(f"config must be a llava.pruning.PruningConfig, got {type(config).__name__}")
    config.validate()
    spec = METHODS[config.method]
    if spec.stage == "decoder":
        raise ValueError(f"pruning method {config.method!r} prunes inside the language model; "
                         "enable_pruning only selects visual tokens before the LLM: choose a selection method "
                         "such as agile, fastervlm or divprune")
    if spec.stage == "pre-projector":
        raise ValueError(f"pruning method {config.method!r} builds new tokens before the projector; enable_pruning "
                         "only supports index-selection methods (agile, fastervlm, divprune, ...)")
    needed = set(spec.inputs) - ({"states"} if config.options().get("vispruner_similarity") == "projected" else set())
    if needed:
        hint = " (or vispruner_similarity='projected')" if config.method == "vispruner" else ""
        raise ValueError(f"pruning method {config.method!r} reads {', '.join(sorted(needed))} from the vision tower, "
                         f"which enable_pruning does not provide; choose a method that reads the features and the "
                         f"CLS attention only{hint}")
    return spec


def _vision_layers(model):
    tower = model.model.vision_tower
    tower = getattr(tower, "vision_model", tower)
    encoder = getattr(tower, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if layers is None or not all(hasattr(l, "self_attn") for l in layers):
        raise NotImplementedError(f"attention-based pruning needs a CLIP-style vision tower (encoder.layers[i]."
                                  f"self_attn), got {type(model.model.vision_tower).__name__}")
    return layers


def _attention_layer(model, vision_feature_layer, strategy):
    """The self-attention module of the encoder layer whose output is hidden_states[vision_feature_layer]."""
    if not isinstance(vision_feature_layer, int):
        raise NotImplementedError(f"attention-based pruning needs one int vision_feature_layer, got "
                                  f"{vision_feature_layer!r}")
    if strategy != "default":
        raise NotImplementedError(f"attention-based pruning needs vision_feature_select_strategy='default' "
                                  f"(patch tokens only), got {strategy!r}")
    layers = _vision_layers(model)
    n_run = vision_feature_layer % (len(layers) + 1)  # hidden_states[i] is the output after i layers
    if not -len(layers) - 1 <= vision_feature_layer <= len(layers):
        raise ValueError(f"vision_feature_layer {vision_feature_layer} is out of range for {len(layers)} layers")
    if n_run == 0:
        raise ValueError("vision_feature_layer selects the embeddings: there is no attention to prune with")
    attn = layers[n_run - 1].self_attn
    for name in ("q_proj", "k_proj", "num_heads", "head_dim", "scale"):
        if not hasattr(attn, name):
            raise NotImplementedError(f"the vision attention module {type(attn).__name__} has no {name!r}")
    return attn


def _make_get_image_features(model, spec, config, orig):
    """model.model.get_image_features with the selection applied: the language model's own forward (and, in
    transformers >= 5.24, generate's image encoding) then receive K features per image. The CLS attention
    row is captured from the select layer's q/k projections during the same vision forward."""

    def get_image_features(pixel_values, *args, **kwargs):
        layer = kwargs.get("vision_feature_layer")
        layer = model.config.vision_feature_layer if layer is None else layer
        strategy = kwargs.get("vision_feature_select_strategy")
        strategy = model.config.vision_feature_select_strategy if strategy is None else strategy
        captured, hooks = {}, []
        if spec.needs_attention:
            attn = _attention_layer(model, layer, strategy)
            hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o)),
                     attn.k_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o))]
        try:
            out = orig(pixel_values, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        features = torch.stack(list(out.pooler_output))  # [images, N, D]
        if config.visual_token_num >= features.shape[1]:
            return out  # K >= N: nothing to prune
        attention = cls_attention_row(attn, captured["q"], captured["k"]) if spec.needs_attention else None
        idx = select_visual_tokens(config.method, features, attention, config.visual_token_num, **config.options())
        out.pooler_output = list(features.gather(1, idx[:, :, None].expand(-1, -1, features.shape[-1])).unbind(0))
        state = pruning_state(model)
        if state is not None:
            state.last_indices, state.last_attention = idx, attention
        return out

    return get_image_features


def _keep_mask(input_ids, image_token_id, n, k):
    """[B, T] bool: every text token and the first k of each image's n placeholders. Rows must end equal."""
    is_image = input_ids == image_token_id
    counts = is_image.sum(1)
    if bool((counts % n != 0).any()):
        raise ValueError(f"each row must hold whole runs of {n} image tokens, got counts {counts.tolist()}")
    rank = (is_image.long().cumsum(1) - 1) % n  # position inside the image's run
    keep = ~is_image | (rank < k)
    lengths = keep.sum(1)
    if bool((lengths != lengths[0]).any()):
        raise NotImplementedError("rows with different numbers of images in one batch are not supported "
                                  "with pruning: run them separately")
    return keep


def _shorten(tensor, keep):
    if tensor is None:
        return None
    if tensor.shape[:2] != keep.shape:
        raise NotImplementedError(f"pruning can only shorten [B, T] tensors matching input_ids, got "
                                  f"{tuple(tensor.shape)}")
    return tensor[keep].view(keep.shape[0], -1, *tensor.shape[2:])


def _image_counts(model, input_ids, pixel_values):
    """(images, placeholder tokens per image) or a clear error."""
    n_images = pixel_values.shape[0]
    total = int((input_ids == model.config.image_token_id).sum())
    if n_images == 0 or total % n_images != 0:
        raise ValueError(f"{total} image tokens in input_ids do not split evenly over {n_images} images")
    return n_images, total // n_images


def _make_forward(model, config, orig_forward):
    """forward that cuts each image's run of N placeholders (input_ids, attention_mask, labels) to its first
    K; the pruned get_image_features gives the K features that fill them."""
    signature = inspect.signature(orig_forward)
    named = [p.name for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]

    @functools.wraps(orig_forward)
    def forward(*args, **kwargs):
        kw = dict(zip(named, args))
        kw.update(kwargs)
        input_ids, pixel_values = kw.get("input_ids"), kw.get("pixel_values")
        if pixel_values is None:
            return orig_forward(**kw)  # no image, or a decoding step
        if input_ids is None:
            raise NotImplementedError("visual-token pruning needs input_ids with pixel_values (not inputs_embeds): "
                                      "it shortens the image-token runs")
        if kw.get("image_sizes") is not None:
            raise NotImplementedError("visual-token pruning does not support image_sizes (variable-size towers)")
        _, per_image = _image_counts(model, input_ids, pixel_values)
        if per_image > config.visual_token_num:  # full runs: cut each to its first K placeholders
            if kw.get("position_ids") is not None:
                raise NotImplementedError("explicit position_ids with full-length image runs: pass them for the "
                                          "shortened sequence (K placeholders per image) or leave them out")
            keep = _keep_mask(input_ids, model.config.image_token_id, per_image, config.visual_token_num)
            for name in ("input_ids", "attention_mask", "labels"):
                if kw.get(name) is not None:
                    kw[name] = _shorten(kw[name], keep)
        return orig_forward(**kw)

    return forward


def _make_generate(model, config, orig_generate):
    """generate on the prompt with each image's placeholders cut to K (the pruned get_image_features fills
    them); returns the caller's prompt followed by the new tokens, so slicing by the prompt length works."""

    @functools.wraps(orig_generate)
    def generate(*args, **kwargs):
        args = list(args)
        key = None
        if args:
            input_ids = args.pop(0)
        elif kwargs.get("input_ids") is not None:
            key, input_ids = "input_ids", kwargs.pop("input_ids")
        else:
            key, input_ids = "inputs", kwargs.pop("inputs", None)

        def call(ids):
            return orig_generate(ids, *args, **kwargs) if key is None else orig_generate(*args, **{key: ids}, **kwargs)

        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None or input_ids is None:
            return call(input_ids)
        if kwargs.get("inputs_embeds") is not None:
            raise NotImplementedError("visual-token pruning needs input_ids with pixel_values (not inputs_embeds)")
        if kwargs.get("image_sizes") is not None:
            raise NotImplementedError("visual-token pruning does not support image_sizes (variable-size towers)")
        _, per_image = _image_counts(model, input_ids, pixel_values)
        if per_image <= config.visual_token_num:  # K >= N (or already shortened): nothing to cut
            return call(input_ids)
        if kwargs.get("position_ids") is not None:
            raise NotImplementedError("explicit position_ids are not supported with pruning in generate")
        keep = _keep_mask(input_ids, model.config.image_token_id, per_image, config.visual_token_num)
        short = _shorten(input_ids, keep)
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = _shorten(kwargs["attention_mask"], keep)
        if kwargs.get("max_length") is not None:
            kwargs["max_length"] = kwargs["max_length"] - (input_ids.shape[1] - short.shape[1])
        out = call(short)
        if isinstance(out, torch.Tensor):
            return torch.cat([input_ids.to(out.device), out[:, short.shape[1]:]], dim=1)
        if getattr(out, "sequences", None) is not None:
            sequences = out.sequences
            out.sequences = torch.cat([input_ids.to(sequences.device), sequences[:, short.shape[1]:]], dim=1)
        return out

    return generate


def enable_pruning(model, config):
    """Turn visual-token pruning on in place for a transformers LlavaForConditionalGeneration: its forward and
    generate then feed exactly K = config.visual_token_num visual embeddings per image to the language model
    (kept in raster order). Calling it again replaces the previous config; method "none" leaves the model
    unpruned. Returns the model."""
    _check_model(model)
    spec = _check_config(config)
    disable_pruning(model)
    if spec.stage == "none":
        return model
    if spec.needs_attention:  # fail now, not at the first forward
        _attention_layer(model, model.config.vision_feature_layer, model.config.vision_feature_select_strategy)
    saved = {name: model.__dict__.get(name, _MISSING) for name in ("forward", "generate")}
    saved["model.get_image_features"] = model.model.__dict__.get("get_image_features", _MISSING)
    orig_forward, orig_generate = model.forward, model.generate  # bound (or an accelerate hook's wrapper)
    orig_features = model.model.get_image_features
    model.__dict__[_STATE] = HFPruningState(config, saved)
    model.forward = _make_forward(model, config, orig_forward)
    model.generate = _make_generate(model, config, orig_generate)
    model.model.get_image_features = _make_get_image_features(model, spec, config, orig_features)
    return model


def disable_pruning(model):
    """Undo enable_pruning: the model's own forward / generate are back (a no-op when pruning is off)."""
    state = model.__dict__.pop(_STATE, None)
    if state is None:
        return model
    for name, previous in state.saved.items():
        owner = model.model if name.startswith("model.") else model
        name = name.split(".")[-1]
        if previous is _MISSING:
            owner.__dict__.pop(name, None)
        else:
            owner.__dict__[name] = previous
    return model
