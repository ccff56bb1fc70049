"""`load_pretrained_model`: upstream's signature and return value, with the loading branch decided from
the checkpoint's files and config (upstream decides from words in the folder name, kept as a fallback).

Branches (see README, "Loading checkpoints"):
    full       config has mm_vision_tower and the folder holds the LLM weights (llava-v1.5-7b, v1.6)
    lora       a PEFT adapter + non_lora_trainables.bin on top of `model_base` (llava-v1.5-7b-lora)
    projector  only mm_projector.bin on top of `model_base` (stage-1 output)
    plain      no mm_vision_tower: a plain causal LM (optionally a LoRA on `model_base`)
"""
import json
import os
import re
import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from llava.model.compat import quiet_peft
from llava.model.hf_convert import is_llava_hf, load_llava_hf
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.language_model.llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM
from llava.model.multimodal_encoder.clip_encoder import resolve_vision_tower
from llava.utils import progress_bars

WEIGHT_INDEXES = ("pytorch_model.bin.index.json", "model.safetensors.index.json")
WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")


def resolve_checkpoint(path, what="model_path"):
    """A local folder for `path`: the folder, or its snapshot in the Hugging Face cache. No download."""
    if path is None:
        return None
    if os.path.isdir(path):
        return path
    if not os.path.exists(path) and path.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(path, local_files_only=True)
        except Exception:
            pass
    if path.count("/") != 1 or path.startswith((".", "/", "~")):  # a path, not a hub id
        raise FileNotFoundError(f"Checkpoint not found ({what}={path!r}): no such folder")
    raise FileNotFoundError(
        f"Checkpoint not found ({what}={path!r}): not a local folder and not in the Hugging Face cache. "
        f"Download it first (e.g. `hf download {path} --local-dir checkpoints/{os.path.basename(path.rstrip('/'))}`) "
        f"and pass that folder."
    )


def weight_files(path):
    """The LLM weight files in a checkpoint folder: one file, or the shards of a sharded checkpoint."""
    return [f for f in os.listdir(path) if f in WEIGHT_FILES
            or (f.startswith(("pytorch_model-", "model-")) and f.endswith((".bin", ".safetensors")))]


def has_llm_weights(path):
    return bool(set(os.listdir(path)) & set(WEIGHT_INDEXES)) or bool(weight_files(path))


def from_pretrained(cls, path, loaded_later=(), **kwargs):
    """cls.from_pretrained, with transformers' progress bar only where loading takes a while (over 1 GB
    of weights). `loaded_later`: the names of weights another file provides right after (a projector,
    LoRA's non_lora_trainables), which transformers' load report would call missing."""
    size = sum(os.path.getsize(os.path.join(path, f)) for f in weight_files(path))
    own = cls.__dict__.get("_keys_to_ignore_on_load_missing")
    if loaded_later:  # read by the model's post_init, during from_pretrained
        cls._keys_to_ignore_on_load_missing = [f"^{re.escape(k)}$" for k in loaded_later] + list(
            cls._keys_to_ignore_on_load_missing or [])
    try:
        with progress_bars(size > 2**30):
            return cls.from_pretrained(path, **kwargs)
    finally:
        if loaded_later and own is None:
            del cls._keys_to_ignore_on_load_missing
        elif loaded_later:
            cls._keys_to_ignore_on_load_missing = own


def read_config(path):
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{path!r} has no config.json: not a model checkpoint folder")
    with open(config_file) as f:
        return json.load(f)


def detect_checkpoint_kind(model_path, model_name, model_base):
    """'full' | 'lora' | 'projector' | 'plain' from the files; upstream's name rules when files are silent."""
    cfg = read_config(model_path)
    files = set(os.listdir(model_path))
    is_llava = "mm_vision_tower" in cfg or "vision_tower" in cfg
    if not is_llava:
        return "plain"
    if "adapter_config.json" in files:
        return "lora"
    if has_llm_weights(model_path):
        if model_base is not None:
            warnings.warn(f"{model_path} holds full weights; model_base={model_base!r} is not used")
        return "full"
    if "mm_projector.bin" in files:
        return "projector"
    name = (model_name or "").lower()  # the folder holds neither: fall back to upstream's name rules
    if "lora" in name and model_base is not None:
        return "lora"
    return "projector" if model_base is not None else "full"


def llava_config(path, cfg_dict=None):
    """Our config class for a LLaVA config.json, whatever its model_type says ("llava" in the official
    uploads, which transformers' AutoConfig would map to its own, different LlavaConfig)."""
    cfg_dict = dict(cfg_dict or read_config(path))
    arch = " ".join(cfg_dict.get("architectures") or []).lower() + " " + cfg_dict.get("model_type", "")
    cls = LlavaMistralConfig if "mistral" in arch else LlavaConfig
    cfg_dict.pop("model_type", None)
    return cls.from_dict(cfg_dict)


def model_class_for(config):
    return LlavaMistralForCausalLM if isinstance(config, LlavaMistralConfig) else LlavaLlamaForCausalLM


def load_tokenizer(path, use_fast=False):
    """The tokenizer class named in tokenizer_config.json (LlamaTokenizer for every LLaVA release).

    Not AutoTokenizer first: it looks at config.json, and for `model_type: "llava"` transformers maps
    that to its own Llava entry and returns a generic tokenizer without LLaMA's dummy-prefix rule,
    which changes the prompt ids.
    """
    import transformers

    config_file = os.path.join(path, "tokenizer_config.json")
    try:
        cls_name = json.load(open(config_file)).get("tokenizer_class", "") if os.path.isfile(config_file) else ""
        cls = getattr(transformers, cls_name, None) or getattr(transformers, cls_name.removesuffix("Fast"), None)
        if cls is not None:
            return cls.from_pretrained(path)
        return AutoTokenizer.from_pretrained(path, use_fast=use_fast)
    except Exception as e:  # a clear message instead of a deep traceback
        raise ValueError(f"Could not load the tokenizer from {path!r}: {e}") from e


def load_state_file(path):
    """Safe load of a `.bin` state dict (tensors only)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing checkpoint file: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_non_lora_trainables(path):
    """non_lora_trainables.bin with the model's own key names (PEFT's base_model.model. prefix dropped)."""
    state = load_state_file(os.path.join(path, "non_lora_trainables.bin"))
    state = {(k[len("base_model.") :] if k.startswith("base_model.") else k): v for k, v in state.items()}
    if any(k.startswith("model.model.") for k in state):
        state = {(k[len("model.") :] if k.startswith("model.") else k): v for k, v in state.items()}
    return state


def load_non_lora_trainables(model, state):
    embed = state.get("model.embed_tokens.weight")
    if embed is not None and embed.shape[0] != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(embed.shape[0])
    dtype = model.get_input_embeddings().weight.dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)


def read_projector(path):
    return load_state_file(os.path.join(path, "mm_projector.bin"))


def load_projector(model, state, path):
    dtype = model.get_input_embeddings().weight.dtype
    missing = [k for k, _ in model.named_parameters() if "mm_projector" in k and k not in state]
    if missing:
        raise ValueError(f"{path}/mm_projector.bin lacks projector weights: {missing}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)


def load_pretrained_model(
    model_path,
    model_base,
    model_name,
    load_8bit=False,
    load_4bit=False,
    device_map="auto",
    device="cuda",
    use_flash_attn=False,
    **kwargs,
):
    """-> (tokenizer, model, image_processor, context_len), as upstream.

    Extra keyword arguments: `pruning=PruningConfig(...)` switches visual-token pruning on (default: the
    settings saved in the checkpoint's config under "pruning", else none; `model.set_pruning` changes it
    later); `vision_tower=<folder or hub id>` overrides the config's mm_vision_tower (a relative
    mm_vision_tower naming a folder inside the checkpoint, as llava-testbed ships its tower, is read there);
    `torch_dtype`/`dtype` overrides the default (float16 on CUDA, float32 elsewhere); anything else goes
    to `from_pretrained`.
    """
    vision_tower_override = kwargs.pop("vision_tower", None)
    pruning = kwargs.pop("pruning", None)
    if pruning is not None:
        pruning.validate()  # bad flags fail before any weights are read
    dtype = kwargs.pop("torch_dtype", None) or kwargs.pop("dtype", None)
    kwargs = {"device_map": device_map, **kwargs}
    if device != "cuda":
        kwargs["device_map"] = {"": device}
    if load_8bit or load_4bit:
        import importlib.util

        from transformers import BitsAndBytesConfig

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("--load-8bit/--load-4bit need bitsandbytes: pip install -e '.[quant]' (CUDA GPUs)")

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if load_8bit
            else BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_compute_dtype=torch.float16,
                bnb_4bit_use_double_quant=True,
                bnb_4bit_quant_type="nf4",
            )
        )
    else:
        kwargs["dtype"] = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    if use_flash_attn:
        kwargs["attn_implementation"] = "flash_attention_2"

    model_path = resolve_checkpoint(model_path, "model_path")
    model_base = resolve_checkpoint(model_base, "model_base")
    checkpoint_config = read_config(model_path)
    if is_llava_hf(checkpoint_config):  # transformers' own layout (llava-hf): converted on load
        if model_base is not None or vision_tower_override is not None:
            raise ValueError(f"{model_path} is a llava-hf checkpoint (tower and LLM inside): it takes no "
                             f"model_base or vision_tower")
        tokenizer = load_tokenizer(model_path)
        model, image_processor = load_llava_hf(model_path, checkpoint_config, **kwargs)
        model.set_pruning(pruning)
        return tokenizer, model, image_processor, getattr(model.config, "max_position_embeddings", 2048)
    kind = detect_checkpoint_kind(model_path, model_name, model_base)

    if kind == "lora" and model_base is None:
        base = json.load(open(os.path.join(model_path, "adapter_config.json"))).get("base_model_name_or_path")
        if base and os.path.isdir(base):
            model_base = base
        else:
            raise ValueError(
                f"{model_path} is a LoRA checkpoint: pass the LLM it was trained on as model_base "
                f"(--model-base), e.g. lmsys/vicuna-7b-v1.5"
            )
    if kind == "projector" and model_base is None:
        raise ValueError(
            f"{model_path} holds only mm_projector.bin: pass the LLM it was trained on as model_base (--model-base)"
        )

    if kind == "plain":
        tokenizer = load_tokenizer(model_base or model_path)
        model = from_pretrained(AutoModelForCausalLM, model_base or model_path, **kwargs)
        if model_base is not None:
            from peft import PeftModel

            with quiet_peft():
                model = PeftModel.from_pretrained(model, model_path).merge_and_unload()
        image_processor = None
    else:
        config = llava_config(model_path)
        if vision_tower_override is not None:
            config.mm_vision_tower = vision_tower_override
        tower_name = getattr(config, "mm_vision_tower", None)
        if vision_tower_override is None and tower_name and not os.path.isabs(tower_name) \
                and os.path.isdir(os.path.join(model_path, tower_name)):
            config.mm_vision_tower = os.path.join(model_path, tower_name)  # a tower shipped inside the checkpoint
        resolve_vision_tower(getattr(config, "mm_vision_tower", None) or config.vision_tower,  # fail before the LLM
                             "--vision-tower" if vision_tower_override is not None else None)
        model_cls = model_class_for(config)
        if kind == "full":
            tokenizer = load_tokenizer(model_path)
            model = from_pretrained(model_cls, model_path, config=config, **kwargs)
        else:
            tokenizer = load_tokenizer(model_base)
            extra = read_non_lora_trainables(model_path) if kind == "lora" else read_projector(model_path)
            model = from_pretrained(model_cls, model_base, loaded_later=list(extra), config=config, **kwargs)
            if kind == "lora":
                from peft import PeftModel

                load_non_lora_trainables(model, extra)
                with quiet_peft():
                    model = PeftModel.from_pretrained(model, model_path).merge_and_unload()
            else:
                load_projector(model, extra, model_path)
        image_processor = attach_vision(model, tokenizer, device_map, device)
        model.set_pruning(pruning if pruning is not None else getattr(model.config, "pruning", None))

    context_len = getattr(model.config, "max_sequence_length", 2048)
    model.eval()
    return tokenizer, model, image_processor, context_len


def attach_vision(model, tokenizer, device_map, device):
    """Upstream's post-processing: extra image tokens, then load the vision tower beside the LLM."""
    if getattr(model.config, "mm_use_im_patch_token", True):
        tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
    if getattr(model.config, "mm_use_im_start_end", False):
        tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:  # rows for added tokens; never fewer
        model.resize_token_embeddings(len(tokenizer))  # (llava-hf pads its vocabulary to 32064 rows)
    vision_tower = model.get_vision_tower()
    if not vision_tower.is_loaded:
        vision_tower.load_model(device_map=device_map)
    # As upstream: with device_map="auto" the tower keeps the float32 it was loaded in (so upstream's
    # published numbers ran CLIP in float32); with an explicit device map it takes the LLM's dtype.
    llm_param = model.get_input_embeddings().weight
    if device_map == "auto":
        vision_tower.to(device=llm_param.device)
    else:
        vision_tower.to(device=llm_param.device, dtype=llm_param.dtype)
    return vision_tower.image_processor
