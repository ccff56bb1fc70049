"""Tiny LLaVA checkpoints in the published on-disk layouts, generated offline and deterministically.

    python -m llava.tools.make_tiny_checkpoint OUT [--kind v1.5|v1.6|v1.6-mistral|lora|projector] [--seed 0]

What each kind writes (mirroring the public checkpoints named in brackets):
    v1.5          OUT: config.json (model_type "llava" like the official upload), two pytorch_model-*.bin shards
                  + index, mm_projector.bin, tokenizer files             [liuhaotian/llava-v1.5-7b]
    v1.6          as v1.5 + anyres, spatial_unpad, model.image_newline    [liuhaotian/llava-v1.6-vicuna-7b]
    v1.6-mistral  the same on a tiny Mistral                              [liuhaotian/llava-v1.6-mistral-7b]
    lora          OUT-base: a plain LLaMA [lmsys/vicuna-7b-v1.5]; OUT: config, PEFT adapter,
                  non_lora_trainables.bin                                 [liuhaotian/llava-v1.5-7b-lora]
    projector     OUT-base as above; OUT: config.json + mm_projector.bin
                                              [liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5]
The CLIP tower (real 336 px / patch-14 geometry: 576 patches + CLS, tiny width) is written beside OUT
(`OUT-clip-vit-tiny-patch14-336`), or into a Hugging Face cache layout with --hf-cache so the config can
name it "openai/clip-vit-large-patch14-336" as the real checkpoints do. Weights are stored in float16
like the published ones; the official v1.5 weights do not include the tower, so neither do these.
"""
import argparse
import hashlib
import json
import os

import torch

CLIP_HUB_NAME = "openai/clip-vit-large-patch14-336"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
LLM_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5)
TOWER_HIDDEN = 64


# ---- tokenizer ----------------------------------------------------------------------------------
def _corpus():
    """Deterministic English text covering the words of LLaVA's prompts and the demo questions."""
    from llava.conversation import conv_templates

    lines = []
    for conv in conv_templates.values():
        lines.append(conv.system)
        lines += [" ".join(conv.roles), conv.sep, conv.sep2 or ""]
        lines += [m for _, m in conv.messages]
    lines += ["USER: ASSISTANT: Human: Assistant: [INST] [/INST] <<SYS>> <</SYS>> <|im_start|>system <|im_end|>",
              "Answer the question using a single word or phrase.",
              "Answer with the option's letter from the given choices directly.",
              "Describe the image. What is in the image? Is there a cat in the image? Please answer yes or no."]
    colours = ["red", "green", "blue", "yellow", "white", "black", "purple", "orange"]
    shapes = ["circle", "square", "triangle", "star", "cross", "cat", "dog", "car", "tree", "person"]
    places = ["left", "right", "top", "bottom", "middle", "center", "corner"]
    for i, colour in enumerate(colours):
        for j, shape in enumerate(shapes):
            place = places[(i + j) % len(places)]
            lines.append(f"There is a {colour} {shape} on the {place} of the picture, next to {i + j} other objects.")
            lines.append(f"How many {shape}s are {colour}? The answer is {i * j + 3}. Yes, no, maybe.")
            lines.append(f"A photo of {j + 2} {colour} {shape}s; the {shape} is {place}.\nQuestion: what colour?")
    # one sentence per line and no newline inside: like LLaMA's vocab, "\n" is left to byte fallback (<0x0A>)
    return [part for line in lines for part in line.split("\n") if part]


def train_tokenizer(out_dir):
    """A sentencepiece BPE model with LLaMA's settings and special-token layout, plus HF tokenizer files."""
    import io

    import sentencepiece as spm

    os.makedirs(out_dir, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=600, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        character_coverage=1.0, allow_whitespace_only_pieces=True, hard_vocab_limit=False,
        max_sentence_length=8192, minloglevel=2,
    )
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
        "legacy": False, "model_max_length": 2048, "padding_side": "right", "clean_up_tokenization_spaces": False,
        "sp_model_kwargs": {},
    }
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    _write_json(os.path.join(out_dir, "special_tokens_map.json"),
                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    return spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


# ---- vision tower -------------------------------------------------------------------------------
def make_vision_tower(out_dir, seed=0):
    """Tiny CLIP vision tower with CLIP-L/336's geometry and image processor settings."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=TOWER_HIDDEN, intermediate_size=128, num_hidden_layers=4,
                              num_attention_heads=4, image_size=336, patch_size=14, projection_dim=32,
                              hidden_act="quick_gelu")
    model = CLIPVisionModel(config)
    model.save_pretrained(out_dir)
    _write_json(os.path.join(out_dir, "preprocessor_config.json"), {
        "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD, "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336},
    })


def _tower_in_hf_cache(cache_dir, seed):
    repo = os.path.join(cache_dir, "models--" + CLIP_HUB_NAME.replace("/", "--"))
    commit = hashlib.sha1(f"tiny-clip-{seed}".encode()).hexdigest()
    snapshot = os.path.join(repo, "snapshots", commit)
    if not os.path.isfile(os.path.join(snapshot, "config.json")):
        make_vision_tower(snapshot, seed)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(commit)
    return CLIP_HUB_NAME, snapshot


# ---- LLM ----------------------------------------------------------------------------------------
def _llm(kind, vocab_size, seed):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed + 1)
    common = dict(LLM_SHAPE, vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False)
    if kind == "v1.6-mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=None, **common))
    return LlamaForCausalLM(LlamaConfig(**common))


def _projector(seed, hidden):
    g = torch.Generator().manual_seed(seed + 2)
    w = lambda *shape: torch.randn(*shape, generator=g) * 0.1  # noqa: E731
    return {"model.mm_projector.0.weight": w(hidden, TOWER_HIDDEN), "model.mm_projector.0.bias": w(hidden),
            "model.mm_projector.2.weight": w(hidden, hidden), "model.mm_projector.2.bias": w(hidden)}


def _llava_config(llm, kind, tower_name, model_type):
    cfg = llm.config.to_dict()
    for key in ("transformers_version", "dtype", "torch_dtype", "_name_or_path", "architectures"):
        cfg.pop(key, None)
    mistral = kind == "v1.6-mistral"
    cfg.update({
        "architectures": ["LlavaMistralForCausalLM" if mistral else "LlavaLlamaForCausalLM"],
        "model_type": "llava_mistral" if mistral else model_type,
        "torch_dtype": "float16", "mm_vision_tower": tower_name, "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": TOWER_HIDDEN,
        "image_aspect_ratio": "pad", "mm_patch_merge_type": "flat", "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right",
        "use_mm_proj": True, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "use_cache": True,
    })
    if kind.startswith("v1.6"):
        cfg.update({"image_aspect_ratio": "anyres", "image_grid_pinpoints": PINPOINTS,
                    "mm_patch_merge_type": "spatial_unpad"})
    return cfg


def _save_sharded(state, out_dir, safetensors):
    """Two shards + index, with the published file names."""
    keys = list(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    stem, ext, index_name = (("model", "safetensors", "model.safetensors.index.json") if safetensors
                             else ("pytorch_model", "bin", "pytorch_model.bin.index.json"))
    weight_map = {}
    for i, part in enumerate(halves, start=1):
        name = f"{stem}-{i:05d}-of-00002.{ext}"
        shard = {k: state[k].contiguous() for k in part}
        if safetensors:
            from safetensors.torch import save_file

            save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
        else:
            torch.save(shard, os.path.join(out_dir, name))
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    _write_json(os.path.join(out_dir, index_name), {"metadata": {"total_size": total}, "weight_map": weight_map})


def _save_plain_llm(llm, out_dir, tokenizer_src):
    """A plain LLaMA checkpoint (the `model_base` of LoRA / projector checkpoints)."""
    os.makedirs(out_dir, exist_ok=True)
    cfg = llm.config.to_dict()
    for key in ("transformers_version", "dtype", "_name_or_path"):
        cfg.pop(key, None)
    cfg.update({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16"})
    _write_json(os.path.join(out_dir, "config.json"), cfg)
    state = {k: v.half() for k, v in llm.state_dict().items()}
    _save_sharded(state, out_dir, safetensors=False)
    _copy_tokenizer(tokenizer_src, out_dir)


def _copy_tokenizer(src, dst):
    import shutil

    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def make_checkpoint(out_dir, kind="v1.5", seed=0, vision_tower=None, hf_cache=None, model_type="llava",
                    safetensors=False):
    """Write a tiny checkpoint of `kind`; returns {"model_path", "model_base", "vision_tower"}."""
    kinds = ("v1.5", "v1.6", "v1.6-mistral", "lora", "projector")
    if kind not in kinds:
        raise ValueError(f"Unknown --kind {kind!r}; choose from {', '.join(kinds)}")
    out_dir = os.path.abspath(out_dir.rstrip("/"))
    os.makedirs(out_dir, exist_ok=True)

    # vision tower
    if hf_cache is not None:
        tower_name, tower_dir = _tower_in_hf_cache(os.path.abspath(hf_cache), seed)
    else:
        tower_dir = os.path.abspath(vision_tower or out_dir + "-clip-vit-tiny-patch14-336")
        if not os.path.isfile(os.path.join(tower_dir, "config.json")):
            make_vision_tower(tower_dir, seed)
        tower_name = tower_dir

    vocab_size = train_tokenizer(out_dir)
    llm = _llm(kind, vocab_size, seed)
    hidden = llm.config.hidden_size
    projector = _projector(seed, hidden)
    config = _llava_config(llm, kind, tower_name, model_type)
    result = {"model_path": out_dir, "model_base": None, "vision_tower": tower_dir}

    if kind in ("v1.5", "v1.6", "v1.6-mistral"):
        state = {k: v.half() for k, v in llm.state_dict().items()}
        state.update({k: v.half() for k, v in projector.items()})
        if kind.startswith("v1.6"):
            g = torch.Generator().manual_seed(seed + 3)
            state["model.image_newline"] = (torch.randn(hidden, generator=g) / hidden**0.5).half()
        _write_json(os.path.join(out_dir, "config.json"), config)
        _write_json(os.path.join(out_dir, "generation_config.json"),
                    {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_length": 4096})
        _save_sharded(state, out_dir, safetensors)
        torch.save({k: v.half() for k, v in projector.items()}, os.path.join(out_dir, "mm_projector.bin"))
        return result

    base_dir = out_dir + "-base"
    _save_plain_llm(llm, base_dir, out_dir)
    result["model_base"] = base_dir
    if kind == "projector":
        config.update({"architectures": ["LlamaForCausalLM"], "model_type": "llava", "tune_mm_mlp_adapter": True})
        _write_json(os.path.join(out_dir, "config.json"), config)
        torch.save({k: v.half() for k, v in projector.items()}, os.path.join(out_dir, "mm_projector.bin"))
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            os.remove(os.path.join(out_dir, name))  # stage-1 outputs carry no tokenizer
        return result

    # lora: adapter on every linear layer of the LLM, B non-zero so merging changes the model
    from peft import LoraConfig, get_peft_model

    config["model_type"] = "llava_llama"
    _write_json(os.path.join(out_dir, "config.json"), config)
    lora_cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(llm, lora_cfg)
    g = torch.Generator().manual_seed(seed + 4)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    peft_model.peft_config["default"].base_model_name_or_path = base_dir
    peft_model.save_pretrained(out_dir)
    non_lora = {"base_model.model." + k: v.half() for k, v in projector.items()}
    torch.save(non_lora, os.path.join(out_dir, "non_lora_trainables.bin"))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a tiny LLaVA checkpoint in the published layout (offline).")
    parser.add_argument("out")
    parser.add_argument("--kind", default="v1.5", choices=["v1.5", "v1.6", "v1.6-mistral", "lora", "projector"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vision-tower", default=None, help="folder for the tiny CLIP tower (reused if present)")
    parser.add_argument("--hf-cache", default=None,
                        help=f"put the tower in this Hugging Face cache as {CLIP_HUB_NAME} and name it so in config")
    parser.add_argument("--model-type", default="llava", choices=["llava", "llava_llama"],
                        help="config model_type (the official uploads say 'llava')")
    parser.add_argument("--safetensors", action="store_true", help="safetensors shards instead of .bin")
    args = parser.parse_args(argv)
    print(json.dumps(make_checkpoint(args.out, args.kind, args.seed, args.vision_tower, args.hf_cache,
                                     args.model_type, args.safetensors), indent=2))


if __name__ == "__main__":
    main()
