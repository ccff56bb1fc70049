"""Write tiny LLaVA checkpoints in the published on-disk layouts, offline and deterministically.

    python -m llava.tools.make_tiny_checkpoint OUT [--kind v1.5|v1.6|v1.6-mistral|lora|projector] [--seed 0]
        [--vision-tower DIR] [--hf-cache DIR] [--model-type llava|llava_llama] [--safetensors] [--tower-in-weights]

Prints {"model_path", "model_base", "vision_tower"} as JSON. What each kind writes (public model in brackets):

    v1.5          OUT: config.json, generation_config.json, pytorch_model-0000{1,2}-of-00002.bin + index
                  (--safetensors: model-0000{1,2}-of-00002.safetensors + index), mm_projector.bin,
                  tokenizer.model / tokenizer_config.json / special_tokens_map.json     [liuhaotian/llava-v1.5-7b]
    v1.6          as v1.5 + anyres, grid pinpoints, spatial_unpad, model.image_newline,
                  tokenizer_model_max_length 4096                               [liuhaotian/llava-v1.6-vicuna-7b]
    v1.6-mistral  the same on a tiny Mistral (LlavaMistralForCausalLM)         [liuhaotian/llava-v1.6-mistral-7b]
    lora          OUT-base: plain LLaMA + tokenizer                                       [lmsys/vicuna-7b-v1.5]
                  OUT: config.json, adapter_config.json, adapter_model.safetensors, README.md (PEFT's card),
                  non_lora_trainables.bin                                          [liuhaotian/llava-v1.5-7b-lora]
    projector     OUT-base as above; OUT: config.json + mm_projector.bin
                                               [liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5]

The CLIP tower has CLIP-L/336's geometry (336 px, patch 14: 576 patches + CLS) at width 64. It goes to
`OUT-clip-vit-tiny-patch14-336` (rewritten each run), or to `--vision-tower DIR` (reused when DIR already holds
a config.json), or with `--hf-cache DIR` into a Hugging Face hub cache as "openai/clip-vit-large-patch14-336", the
name the config then carries (load it with HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1, or cache_dir=DIR).

Conventions (write them down once):
- LLM, projector, image_newline and LoRA-side tensors are stored in float16, as the published weights are;
  config.json says "torch_dtype": "float16". The CLIP tower is float32, as openai's upload is.
- The tower's weights are named `vision_model.*` as in every published CLIP checkpoint (transformers 5's own
  CLIPVisionModel.save_pretrained drops that prefix), so they are written with safetensors directly.
- The official v1.5 weights carry no tower; nor do these, unless `--tower-in-weights`: then the shards also hold
  `model.vision_tower.vision_tower.vision_model.*`. For v1.6 that reproduces the real release (tower fine-tuned,
  `unfreeze_mm_vision_tower: true`): the embedded tower is the tower folder's weights slightly perturbed, so a
  loader that ignores it gives different features. For v1.5 it mimics a checkpoint saved by the training code
  (frozen tower, identical weights, ignored at load).
- Everything is a function of `seed`; a re-run into the same OUT rewrites identical bytes.
"""
import hashlib
import io
import json
import os
import shutil

import torch

from llava.utils import entry_parser, torch_init

KINDS = ("v1.5", "v1.6", "v1.6-mistral", "lora", "projector")
CLIP_HUB_NAME = "openai/clip-vit-large-patch14-336"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
TOWER_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                   image_size=336, patch_size=14, projection_dim=32, hidden_act="quick_gelu")
TOWER_QK_GAIN = 4.0  # q/k projections scaled so the CLS attention row is peaked (top 10% of patches ~ 1/2 of it)
LLM_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5)
VOCAB_SIZE = 1000
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
LORA_TARGETS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


# ---- tokenizer ----------------------------------------------------------------------------------
_PROMPT_TEXT = """\
A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, \
and polite answers to the user's questions.
A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, \
and polite answers to the human's questions.
The assistant is able to understand the visual content that the user provides, and assist the user with a variety \
of tasks using natural language. The visual content will be provided with the following format: \
<Image>visual content</Image>.
You are a helpful language and vision assistant. You are able to understand the visual content that the user \
provides, and assist the user with a variety of tasks using natural language.
You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.
If a question does not make any sense, or is not factually coherent, explain why instead of answering something \
not correct. If you don't know the answer to a question, please don't share false information.
[INST] <<SYS>>
You are a helpful assistant.
<</SYS>>

What is shown in this picture? [/INST] A red bus on a wet street.</s><s>[INST] And the weather? [/INST]
<|im_start|>system
A conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers.<|im_end|>
<|im_start|>user
<image>
Describe the image in detail.<|im_end|><|im_start|>assistant
<|im_start|>system
Answer the questions.<|im_end|>
USER: <image>
What is in the image? ASSISTANT: A cat sitting on a sofa.</s>USER: What colour is it? ASSISTANT: It is grey.</s>
###Human: <image>
Describe the picture.###Assistant: Two dogs play in the snow.###
Human: What are the key differences between renewable and non-renewable energy sources?
Assistant: Renewable energy sources, such as solar, wind and hydro power, are replenished naturally.
Answer the question using a single word or phrase.
Answer with the option's letter from the given choices directly.
Please answer yes or no.
Answer the question using a single word or phrase. Reference OCR token: STOP, 1984, Main St.
When the provided information is insufficient, respond with 'Unanswerable'.
Is there a dog in the image? Please answer yes or no.
Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: Which of these animals can fly?
Options:
A. cat
B. bird
C. fish
D. horse
Context: The picture shows a kitchen with a table, two chairs and a window.
Provide a one-sentence caption for the provided image.
Provide the bounding box coordinate of the region this sentence describes: [0.12, 0.45, 0.67, 0.98]
What is written on the sign? What time is it? How many people are there? Where was this photo taken?
    def main():
        print("hello, world")  # indented code keeps runs of spaces
        return 0
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 42 100 336 576 1024 2048 3.14 -7 1e-5 50% $20 #3
Punctuation: . , ; : ! ? ' " ( ) [ ] { } < > / \\ | - _ + = * & ^ % $ # @ ~ ` ... -- --> <- => ::
"""

_WORDS = {
    "colour": "red green blue yellow white black purple orange brown grey pink golden silver dark light bright".split(),
    "thing": ("cat dog car bus tree person man woman child bird horse cow sheep boat plane train bicycle "
              "motorcycle table chair sofa bed window door clock book phone laptop cup bottle plate pizza cake "
              "banana apple orange sandwich umbrella kite ball bag sign building house street road bridge river "
              "mountain beach field sky cloud flower grass wall floor shirt hat glasses screen picture photo").split(),
    "place": ("left right top bottom middle center corner background foreground front back side edge "
              "kitchen room park city street beach table shelf window").split(),
    "verb": ("sitting standing walking running eating holding looking lying flying playing riding parked "
             "hanging floating waiting smiling reading writing cooking driving").split(),
    "adj": ("small large tall short old new wooden metal plastic round square empty full busy quiet happy "
            "sunny cloudy wet dry clean dirty open closed").split(),
}
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def _corpus():
    """Deterministic English text covering LLaVA's prompts, eval instructions, digits and punctuation.

    Returned one line per item: like LLaMA's vocabulary, no piece contains a newline, so "\\n" is always the
    byte-fallback piece <0x0A>.
    """
    lines = [line for line in _PROMPT_TEXT.split("\n") if line]
    colour, thing, place, verb, adj = (_WORDS[k] for k in ("colour", "thing", "place", "verb", "adj"))
    for i in range(700):  # index arithmetic instead of a RNG: the same text on every Python
        c, t, p = colour[i % len(colour)], thing[(i * 7) % len(thing)], place[(i * 5) % len(place)]
        v, a, t2 = verb[(i * 3) % len(verb)], adj[(i * 11) % len(adj)], thing[(i * 13 + 5) % len(thing)]
        n = _NUMBER_WORDS[i % len(_NUMBER_WORDS)]
        template = i % 7
        if template == 0:
            lines.append(f"USER: <image>\nWhat is the {t} doing? ASSISTANT: The {a} {c} {t} is {v} "
                         f"near the {t2} on the {p}.</s>")
        elif template == 1:
            lines.append(f"How many {t}s are there in the image? Answer the question using a single word or "
                         f"phrase. ASSISTANT: {n.capitalize()}, i.e. {i % 13}.")
        elif template == 2:
            lines.append(f"There is a {a} {c} {t} in the {p} of the picture, next to {i % 9 + 2} {t2}s.")
        elif template == 3:
            lines.append(f"Is the {t} {c}? Please answer yes or no. {'Yes' if i % 2 else 'No'}, it is {c}.")
        elif template == 4:
            lines.append(f"[INST] Describe the {t2}. [/INST] A {a} {t2} {v} by the {c} {t}; "
                         f"it measures {i * 3 % 97}.{i % 10} cm (about {i % 40 + 1}%).")
        elif template == 5:
            lines.append(f"USER: hello ASSISTANT: Hello! ### Step {i % 9 + 1}: look at the {c} {t}. "
                         f"### Note: hello again, the {t2} is {a}.")
        else:
            lines.append(f"<|im_start|>user\nWhere is the {t}?<|im_end|><|im_start|>assistant\n"
                         f"On the {p}, {v} beside a {c} {t2}!<|im_end|>")
    return [part for line in lines for part in line.split("\n") if part]


def _train_sentencepiece(lines):
    """LLaMA's trainer and normaliser settings (BPE, byte fallback, dummy prefix, spaces kept, digits split)."""
    import sentencepiece as spm

    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(0)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=VOCAB_SIZE, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", allow_whitespace_only_pieces=True,
        split_by_unicode_script=True, split_by_whitespace=True, split_by_number=True,
        treat_whitespace_as_suffix=False, max_sentencepiece_length=16, character_coverage=1.0,
        hard_vocab_limit=False, shuffle_input_sentence=False, max_sentence_length=8192, num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


_SP_CACHE = {}


def train_tokenizer(out_dir, extra_corpus=()):
    """Write tokenizer.model (sentencepiece, trained here), tokenizer_config.json and special_tokens_map.json.

    Ids as in LLaMA: <unk> 0, <s> 1, </s> 2, byte pieces <0x00>..<0xFF> 3..258, no pad id; the HF files
    are those of llava-v1.5 (LlamaTokenizer, add_bos, legacy false, pad "<unk>", model_max_length 2048).
    `extra_corpus`: more lines of text to train on (e.g. a domain's words, so they become whole pieces).
    """
    key = tuple(extra_corpus)
    if key not in _SP_CACHE:  # training is deterministic; do it once per process and corpus
        _SP_CACHE[key] = _train_sentencepiece(_corpus() + list(key))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(_SP_CACHE[key])
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "clean_up_tokenization_spaces": False,
        "eos_token": "</s>", "legacy": False, "model_max_length": 2048, "pad_token": "<unk>",
        "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
    })
    _write_json(os.path.join(out_dir, "special_tokens_map.json"),
                {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"})


def _vocab_size(tokenizer_dir):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=os.path.join(tokenizer_dir, "tokenizer.model")).get_piece_size()


# ---- vision tower -------------------------------------------------------------------------------
def _tower_state(seed):
    """(CLIPVisionConfig, state dict with published `vision_model.*` names) for `seed`."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(**TOWER_SHAPE)
    model = CLIPVisionModel(config)
    state = {}
    for name, tensor in model.state_dict().items():
        name = name if name.startswith("vision_model.") else "vision_model." + name
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = tensor * TOWER_QK_GAIN
        state[name] = tensor.detach().float().contiguous()
    return config, state


@torch_init()
def make_vision_tower(out_dir, seed=0):
    """Write a tiny CLIP vision tower (config.json, model.safetensors, preprocessor_config.json) to out_dir.

    Loads with CLIPVisionModel.from_pretrained(out_dir): [B, 3, 336, 336] -> [B, 577, 64].
    """
    from safetensors.torch import save_file

    config, state = _tower_state(seed)
    os.makedirs(out_dir, exist_ok=True)
    cfg = _clean_config(config.to_dict())
    cfg.update({"architectures": ["CLIPVisionModel"], "torch_dtype": "float32"})
    _write_json(os.path.join(out_dir, "config.json"), cfg)
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    _write_json(os.path.join(out_dir, "preprocessor_config.json"), _image_processor_dict())


def _image_processor_dict():
    """openai/clip-vit-large-patch14-336's preprocessing, as a CLIPImageProcessor serialises it."""
    import transformers
    from transformers.utils import logging

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the torchvision-fallback notice is noise here
    try:
        processor = cls(do_resize=True, size={"shortest_edge": 336}, resample=3, do_center_crop=True,
                        crop_size={"height": 336, "width": 336}, do_rescale=True, rescale_factor=1 / 255,
                        do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
        out = json.loads(processor.to_json_string())
    finally:
        logging.set_verbosity(verbosity)
    out["image_processor_type"] = "CLIPImageProcessor"
    out.pop("processor_class", None)
    return out


def _tower_in_hf_cache(cache_dir, seed):
    """Tower as hub repo CLIP_HUB_NAME in a hub cache: blobs/, snapshots/<commit>/ (links), refs/main."""
    repo = os.path.join(cache_dir, "models--" + CLIP_HUB_NAME.replace("/", "--"))
    commit = hashlib.sha1(f"llava-tiny-clip-vit-patch14-336 seed={seed}".encode()).hexdigest()
    ref = os.path.join(repo, "refs", "main")
    if os.path.isfile(ref):  # never shadow a real download of the model
        current = open(ref).read().strip()
        cfg_file = os.path.join(repo, "snapshots", current, "config.json")
        if current != commit and os.path.isfile(cfg_file) and not _is_tiny_tower(cfg_file):
            raise ValueError(f"{repo} already holds a real {CLIP_HUB_NAME} (commit {current}); "
                             "point --hf-cache at another folder")
    staging = os.path.join(repo, ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    make_vision_tower(staging, seed)
    snapshot = os.path.join(repo, "snapshots", commit)
    os.makedirs(snapshot, exist_ok=True)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    for name in sorted(os.listdir(staging)):
        data = open(os.path.join(staging, name), "rb").read()
        # blob names as the hub's etags: sha256 for LFS files (weights), git blob sha1 for small text files
        blob = (hashlib.sha256(data).hexdigest() if name.endswith(".safetensors")
                else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
        blob_path = os.path.join(repo, "blobs", blob)
        with open(blob_path, "wb") as f:
            f.write(data)
        link = os.path.join(snapshot, name)
        if os.path.lexists(link):
            os.remove(link)
        try:
            os.symlink(os.path.join("..", "..", "blobs", blob), link)
        except OSError:  # no symlinks (some Windows setups): the hub library then stores plain copies too
            shutil.copyfile(blob_path, link)
    shutil.rmtree(staging)
    os.makedirs(os.path.dirname(ref), exist_ok=True)
    with open(ref, "w") as f:
        f.write(commit)  # no trailing newline, as huggingface_hub writes it
    return snapshot


def _is_tiny_tower(config_file):
    cfg = json.load(open(config_file))
    cfg = cfg.get("vision_config", cfg)
    return cfg.get("hidden_size") == TOWER_SHAPE["hidden_size"]


def _finetuned_tower_keys(seed):
    """The tower as a fine-tuned v1.6 checkpoint embeds it: `model.vision_tower.vision_tower.*`, perturbed."""
    _, state = _tower_state(seed)
    g = torch.Generator().manual_seed(seed + 5)
    return {"model.vision_tower.vision_tower." + k: v + 0.01 * v.std().nan_to_num() * torch.randn(v.shape, generator=g)
            for k, v in state.items()}


# ---- LLM ----------------------------------------------------------------------------------------
def _llm(kind, vocab_size, seed):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed + 1)
    common = dict(LLM_SHAPE, vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False)
    if kind == "v1.6-mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=None, rope_theta=1000000.0, **common))
    return LlamaForCausalLM(LlamaConfig(rope_theta=10000.0, **common))


def _llm_config(llm, kind):
    """The LLM part of config.json in the published (transformers 4.3x) spelling."""
    c = llm.config
    mistral = kind == "v1.6-mistral"
    cfg = {
        "architectures": ["MistralForCausalLM" if mistral else "LlamaForCausalLM"],
        "model_type": "mistral" if mistral else "llama",
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": c.hidden_size, "initializer_range": c.initializer_range,
        "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings,
        "num_attention_heads": c.num_attention_heads, "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads, "pad_token_id": 0, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": 1000000.0 if mistral else 10000.0, "tie_word_embeddings": False,
        "torch_dtype": "float16", "transformers_version": "4.36.2" if kind.startswith("v1.6") else "4.31.0",
        "use_cache": True, "vocab_size": c.vocab_size,
    }
    if mistral:
        cfg["sliding_window"] = None
    else:
        cfg.update({"attention_bias": False, "pretraining_tp": 1, "rope_scaling": None})
    return cfg


def _projector(seed, hidden):
    """mlp2x_gelu: Linear(mm_hidden -> hidden), GELU, Linear(hidden -> hidden); float32 here."""
    g = torch.Generator().manual_seed(seed + 2)
    w = lambda *shape: torch.randn(*shape, generator=g) * 0.1  # noqa: E731
    mm_hidden = TOWER_SHAPE["hidden_size"]
    return {"model.mm_projector.0.weight": w(hidden, mm_hidden), "model.mm_projector.0.bias": w(hidden),
            "model.mm_projector.2.weight": w(hidden, hidden), "model.mm_projector.2.bias": w(hidden)}


def _llava_config(llm_cfg, kind, tower_name, model_type, tower_in_weights):
    cfg = dict(llm_cfg)
    mistral = kind == "v1.6-mistral"
    cfg.update({
        "architectures": ["LlavaMistralForCausalLM" if mistral else "LlavaLlamaForCausalLM"],
        "model_type": "llava_mistral" if mistral else model_type,
        "mm_vision_tower": tower_name, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": TOWER_SHAPE["hidden_size"],
        "image_aspect_ratio": "pad", "mm_patch_merge_type": "flat", "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right",
        "use_mm_proj": True, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
    })
    if kind.startswith("v1.6"):
        cfg.update({
            "image_aspect_ratio": "anyres", "image_grid_pinpoints": PINPOINTS, "mm_patch_merge_type": "spatial_unpad",
            "image_crop_resolution": 224, "image_split_resolution": 224, "mm_projector_lr": None,
            "mm_resampler_type": None, "mm_vision_tower_lr": 2e-06, "tune_mm_vision_resampler": False,
            "freeze_mm_vision_resampler": False, "tokenizer_model_max_length": 4096,
            "unfreeze_mm_vision_tower": bool(tower_in_weights),
        })
    return cfg


# ---- writing ------------------------------------------------------------------------------------
def _save_sharded(state, out_dir, safetensors):
    """Two shards + index with the published file names; keys keep their order, split at the middle."""
    keys = list(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    stem, ext, index_name = (("model", "safetensors", "model.safetensors.index.json") if safetensors
                             else ("pytorch_model", "bin", "pytorch_model.bin.index.json"))
    for old in os.listdir(out_dir):  # a re-run with the other format must not leave both behind
        if old.startswith(("model-0", "pytorch_model-0", "model.safetensors", "pytorch_model.bin")):
            os.remove(os.path.join(out_dir, old))
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


def _generation_config(path):
    _write_json(path, {"bos_token_id": 1, "eos_token_id": 2, "max_length": 4096, "pad_token_id": 0,
                       "transformers_version": "4.31.0"})


def _write_base(llm, base_dir, tokenizer_dir):
    """The plain LLaMA a LoRA / projector checkpoint names as model_base (like lmsys/vicuna-7b-v1.5)."""
    os.makedirs(base_dir, exist_ok=True)
    _write_json(os.path.join(base_dir, "config.json"), _llm_config(llm, "v1.5"))
    _generation_config(os.path.join(base_dir, "generation_config.json"))
    _save_sharded({k: v.half() for k, v in llm.state_dict().items()}, base_dir, safetensors=False)
    if os.path.abspath(tokenizer_dir) != os.path.abspath(base_dir):
        for name in TOKENIZER_FILES:
            shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(base_dir, name))


def _write_lora(out_dir, base_dir, config, projector, seed):
    """PEFT LoRA on every linear layer of the base LLM (B non-zero) + non_lora_trainables.bin."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from llava.model.compat import quiet_peft

    # the adapter wraps the base as a loader sees it: built from OUT-base's config and shards, so its names
    # are those of LlamaForCausalLM (base_model.model.model.layers.*) and its base path is OUT-base
    base_cfg = LlamaConfig.from_pretrained(base_dir)
    base = LlamaForCausalLM(base_cfg)
    index = json.load(open(os.path.join(base_dir, "pytorch_model.bin.index.json")))["weight_map"]
    state = {}
    for shard in sorted(set(index.values())):
        state.update(torch.load(os.path.join(base_dir, shard), weights_only=True))
    base.load_state_dict({k: v.float() for k, v in state.items()})
    base.config._name_or_path = base_dir
    base.name_or_path = base_dir

    torch.manual_seed(seed + 4)  # lora_A's kaiming init draws from the global generator
    lora_cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                          target_modules=list(LORA_TARGETS))
    with quiet_peft():
        peft_model = get_peft_model(base, lora_cfg)
    g = torch.Generator().manual_seed(seed + 4)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero (a no-op adapter); training would have moved it
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    peft_model.peft_config["default"].base_model_name_or_path = base_dir
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))  # PEFT edits an existing README instead of rewriting it
    peft_model.save_pretrained(out_dir)
    # PEFT writes target_modules from a set (order depends on PYTHONHASHSEED): sort it for stable bytes
    adapter_cfg_path = os.path.join(out_dir, "adapter_config.json")
    adapter_cfg = json.load(open(adapter_cfg_path))
    if isinstance(adapter_cfg.get("target_modules"), list):
        adapter_cfg["target_modules"] = sorted(adapter_cfg["target_modules"])
    with open(adapter_cfg_path, "w") as f:
        f.write(json.dumps(adapter_cfg, indent=2, sort_keys=True))
    _write_json(os.path.join(out_dir, "config.json"), config)
    torch.save({"base_model.model." + k: v.half() for k, v in projector.items()},
               os.path.join(out_dir, "non_lora_trainables.bin"))


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _clean_config(cfg):
    for key in ("transformers_version", "dtype", "torch_dtype", "_name_or_path", "architectures",
                "id2label", "label2id", "output_attentions", "output_hidden_states", "return_dict",
                "chunk_size_feed_forward", "is_encoder_decoder", "problem_type"):
        cfg.pop(key, None)
    return cfg


@torch_init()
def make_checkpoint(out_dir, kind="v1.5", seed=0, vision_tower=None, hf_cache=None, model_type=None,
                    safetensors=False, tower_in_weights=False):
    """Write a tiny checkpoint of `kind` (see the module docstring for the layouts).

    Returns {"model_path": OUT, "model_base": OUT-base or None, "vision_tower": the tower's folder}, all absolute.
    `model_type` is config.json's label: "llava" (default; the official uploads) or "llava_llama" (what current
    training code writes; the default for `lora`). v1.6-mistral always says "llava_mistral".
    `tower_in_weights` (full kinds only) also stores the tower in the shards, see the module docstring.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if model_type is None:
        model_type = "llava_llama" if kind == "lora" else "llava"
    if model_type not in ("llava", "llava_llama"):
        raise ValueError(f"Unknown model_type {model_type!r}; choose llava or llava_llama")
    if vision_tower is not None and hf_cache is not None:
        raise ValueError("Give either vision_tower or hf_cache, not both")
    out_dir = os.path.abspath(os.fspath(out_dir).rstrip("/\\"))
    os.makedirs(out_dir, exist_ok=True)

    if hf_cache is not None:
        tower_dir = _tower_in_hf_cache(os.path.abspath(os.fspath(hf_cache)), seed)
        tower_name = CLIP_HUB_NAME
    else:
        tower_dir = os.path.abspath(os.fspath(vision_tower)) if vision_tower else out_dir + "-clip-vit-tiny-patch14-336"
        if not (vision_tower and os.path.isfile(os.path.join(tower_dir, "config.json"))):
            make_vision_tower(tower_dir, seed)
        tower_name = tower_dir

    result = {"model_path": out_dir, "model_base": None, "vision_tower": tower_dir}
    full = kind in ("v1.5", "v1.6", "v1.6-mistral")
    tokenizer_dir = out_dir if full else out_dir + "-base"
    train_tokenizer(tokenizer_dir)
    llm = _llm(kind, _vocab_size(tokenizer_dir), seed)
    hidden = llm.config.hidden_size
    projector = _projector(seed, hidden)
    config = _llava_config(_llm_config(llm, kind), kind, tower_name, model_type, tower_in_weights)

    if full:
        state = {k: v.half() for k, v in llm.state_dict().items()}
        state.update({k: v.half() for k, v in projector.items()})
        if kind.startswith("v1.6"):
            g = torch.Generator().manual_seed(seed + 3)
            state["model.image_newline"] = (torch.randn(hidden, generator=g) / hidden**0.5).half()
        if tower_in_weights:
            tower = (_finetuned_tower_keys(seed) if kind.startswith("v1.6") else
                     {"model.vision_tower.vision_tower." + k: v for k, v in _tower_state(seed)[1].items()})
            state.update({k: v.half() for k, v in tower.items()})
        _write_json(os.path.join(out_dir, "config.json"), config)
        _generation_config(os.path.join(out_dir, "generation_config.json"))
        _save_sharded(state, out_dir, safetensors)
        torch.save({k: v.half() for k, v in projector.items()}, os.path.join(out_dir, "mm_projector.bin"))
        return result

    base_dir = out_dir + "-base"
    _write_base(llm, base_dir, tokenizer_dir)
    result["model_base"] = base_dir
    if kind == "projector":  # stage-1 output: config + projector only, no tokenizer, no LLM weights
        config.update({"architectures": ["LlamaForCausalLM"], "tune_mm_mlp_adapter": True})
        _write_json(os.path.join(out_dir, "config.json"), config)
        torch.save({k: v.half() for k, v in projector.items()}, os.path.join(out_dir, "mm_projector.bin"))
        return result
    _write_lora(out_dir, base_dir, config, projector, seed)
    return result


def build_parser():
    parser = entry_parser("llava.tools.make_tiny_checkpoint", __doc__)
    parser.add_argument("out", help="checkpoint folder; lora/projector also write OUT-base")
    parser.add_argument("--kind", default="v1.5", choices=KINDS, help="which published layout to write")
    parser.add_argument("--seed", type=int, default=0, help="every weight and file is a function of this seed")
    parser.add_argument("--vision-tower", default=None, help="folder for the tiny CLIP tower (reused if present)")
    parser.add_argument("--hf-cache", default=None,
                        help=f"put the tower in this Hugging Face hub cache as {CLIP_HUB_NAME} and name it so")
    parser.add_argument("--model-type", default=None, choices=["llava", "llava_llama"],
                        help="config model_type (default: 'llava' as the official uploads; 'llava_llama' for lora)")
    parser.add_argument("--safetensors", action="store_true", help="safetensors shards instead of .bin")
    parser.add_argument("--tower-in-weights", action="store_true",
                        help="also store the tower in the shards (v1.6: fine-tuned, unfreeze_mm_vision_tower true)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = make_checkpoint(args.out, args.kind, args.seed, args.vision_tower, args.hf_cache,
                                 args.model_type, args.safetensors, args.tower_in_weights)
    except (ValueError, OSError) as e:
        parser.exit(2, f"make_tiny_checkpoint: error: {e}\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
