"""LLaVA training: upstream's arguments, data format and recipes, with visual-token pruning in the loop.

    python llava/train/train.py --model_name_or_path ... --version v1 --data_path ... --image_folder ...
        --vision_tower ... [--pruning-method agile --visual-token-num 64] [HF TrainingArguments]

Steps of `train()`: parse arguments (+ the shared pruning flags) -> load the LLM (a plain LLaMA/Mistral or
a LLaVA checkpoint) -> freeze / LoRA -> tokenizer and template -> vision tower + projector -> pruning ->
LLaVATrainer -> save in the layout the recipe implies (projector only, LoRA adapter +
non_lora_trainables.bin, or full model), which `llava.model.builder.load_pretrained_model` reads back.
"""
import argparse
import json
import os
import pathlib
import shutil
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, Optional, Sequence

import torch
import transformers
from torch.utils.data import Dataset

from llava import conversation as conversation_lib
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import load_image, process_images
from llava.pruning import PruningConfig, add_pruning_args
from llava.settings import Pruning, describe
from llava.train.preprocess import TargetMaskError, preprocess, preprocess_multimodal  # noqa: F401 (upstream names)
from llava.model.compat import quiet_peft
from llava.utils import quiet_deepspeed_cpu_notice, torch_init


# ---- arguments (upstream names and defaults) ----------------------------------------------------
@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(default="facebook/opt-125m")
    version: Optional[str] = field(default="v0")
    freeze_backbone: bool = field(default=False)
    tune_mm_mlp_adapter: bool = field(default=False)
    vision_tower: Optional[str] = field(default=None)
    mm_vision_select_layer: Optional[int] = field(default=-1)  # default to the last layer
    pretrain_mm_mlp_adapter: Optional[str] = field(default=None)
    mm_projector_type: Optional[str] = field(default="linear")
    mm_use_im_start_end: bool = field(default=False)
    mm_use_im_patch_token: bool = field(default=True)
    mm_patch_merge_type: Optional[str] = field(default="flat")
    mm_vision_select_feature: Optional[str] = field(default="patch")


@dataclass
class DataArguments:
    data_path: str = field(default=None, metadata={"help": "Path to the training data (a JSON list)."})
    lazy_preprocess: bool = False  # accepted for compatibility: the data set is always lazy
    is_multimodal: bool = False
    image_folder: Optional[str] = field(default=None)
    image_aspect_ratio: str = "square"


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: Optional[str] = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False)
    mpt_attn_impl: Optional[str] = field(default="triton")
    model_max_length: int = field(
        default=512, metadata={"help": "Maximum sequence length. Sequences are right padded (and truncated)."})
    double_quant: bool = field(default=True, metadata={"help": "Compress the quantization statistics."})
    quant_type: str = field(default="nf4", metadata={"help": "fp4 or nf4."})
    bits: int = field(default=16, metadata={"help": "How many bits to use."})
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    mm_projector_lr: Optional[float] = None
    group_by_modality_length: bool = field(default=False)
    # upstream spellings that transformers 5 dropped (their scripts pass them)
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "Warmup as a share of the steps "
                                                                          "(transformers 5: warmup_steps < 1)."})
    evaluation_strategy: Optional[str] = field(default=None, metadata={"help": "Old name of eval_strategy."})

    def __post_init__(self):
        if self.warmup_ratio is not None:
            self.warmup_steps = self.warmup_ratio
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        # transformers 5.24 renamed gradient_checkpointing* to activation_checkpointing* (the old names warn);
        # upstream's scripts pass the old ones, which mean the same: hand them over under the new names.
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if hasattr(self, new) and getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))
                setattr(self, old, None)
        super().__post_init__()


def _pruning_parser():
    return add_pruning_args(argparse.ArgumentParser(add_help=False, allow_abbrev=False))


def split_pruning_args(argv):
    """argv -> (PruningConfig, the rest for HfArgumentParser). Pruning flags are the shared ones
    (`--pruning-method`, `--visual-token-num`, ...); upstream-style underscore spellings are accepted too."""
    parser = _pruning_parser()
    flags = {opt for action in parser._actions for opt in action.option_strings}
    normalized = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            dashed = "--" + name[2:].replace("_", "-")
            if name not in flags and dashed in flags:
                arg = dashed + eq + value
        normalized.append(arg)
    args, rest = parser.parse_known_args(normalized)
    return PruningConfig.from_args(args), rest


def parse_args(argv=None):
    """-> (ModelArguments, DataArguments, TrainingArguments, PruningConfig). --help lists the trainer's
    arguments and the shared pruning flags."""
    argv = sys.argv[1:] if argv is None else list(argv)
    hf_parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    if any(a in ("-h", "--help") for a in argv):
        add_pruning_args(hf_parser).parse_args(["--help"])  # prints, exits
    pruning, rest = split_pruning_args(argv)
    model_args, data_args, training_args = hf_parser.parse_args_into_dataclasses(args=rest)
    return model_args, data_args, training_args, pruning


def parse_checked_args(argv=None):
    """parse_args, then the checks a run needs before it loads anything; a bad setting ends the process
    with one `error: ...` line and exit status 2 (as the CLI and the generators do)."""
    try:
        model_args, data_args, training_args, pruning = parse_args(argv)
        check_training_pruning(pruning)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    defaults = PruningConfig().to_dict()
    sources = {k: "flag" for k, v in pruning.to_dict().items() if v != defaults[k]}
    rank0_print(describe(model_args.model_name_or_path, model_args.version, "--version", Pruning(pruning, sources),
                         output=training_args.output_dir))
    return model_args, data_args, training_args, pruning


def rank0_print(*args):
    if int(os.environ.get("LOCAL_RANK", "0")) in (0, -1):
        print(*args)


# ---- data ---------------------------------------------------------------------------------------
class LazySupervisedDataset(Dataset):
    """Upstream's JSON format: [{"id", "image"?, "conversations": [{"from", "value"}, ...]}]. Tokenizes
    lazily; a sample whose targets cannot be derived raises (naming its id) instead of being skipped."""

    def __init__(self, data_path, tokenizer, data_args):
        super().__init__()
        with open(data_path) as f:
            self.list_data_dict = json.load(f)
        if not isinstance(self.list_data_dict, list) or not self.list_data_dict:
            raise ValueError(f"{data_path}: expected a non-empty JSON list of samples")
        self.tokenizer = tokenizer
        self.data_args = data_args

    def __len__(self):
        return len(self.list_data_dict)

    @staticmethod
    def _words(sample):
        return sum(len(conv["value"].split()) for conv in sample["conversations"])

    @property
    def lengths(self):
        return [self._words(s) + (128 if "image" in s else 0) for s in self.list_data_dict]

    @property
    def modality_lengths(self):
        """Word counts, positive for image samples and negative for text-only ones."""
        return [self._words(s) if "image" in s else -self._words(s) for s in self.list_data_dict]

    def _image(self, sample):
        args = self.data_args
        path = os.path.join(args.image_folder or "", sample["image"])
        image = load_image(path)
        cfg = SimpleNamespace(image_aspect_ratio=args.image_aspect_ratio,
                              image_grid_pinpoints=getattr(args, "image_grid_pinpoints", None))
        pixels = process_images([image], args.image_processor, cfg)  # [1, 3, S, S] or anyres [1, V, 3, S, S]
        return pixels[0], image.size

    def __getitem__(self, i) -> Dict[str, torch.Tensor]:
        sample = self.list_data_dict[i]
        sample_id = sample.get("id", i)
        has_image = "image" in sample
        sources = [json.loads(json.dumps(sample["conversations"]))]  # deep copy
        try:
            if has_image:
                image, image_size = self._image(sample)
                sources = preprocess_multimodal(sources, self.data_args)
            data = preprocess(sources, self.tokenizer, has_image=has_image, conv=getattr(self.data_args, "conv", None),
                              sample_ids=[sample_id])
        except (FileNotFoundError, ValueError) as e:
            if isinstance(e, TargetMaskError):
                raise
            raise ValueError(f"sample {sample_id!r}: {e}") from e
        out = {"input_ids": data["input_ids"][0], "labels": data["labels"][0]}
        n_markers = int((out["input_ids"] == IMAGE_TOKEN_INDEX).sum())
        if n_markers != int(has_image):
            raise ValueError(f"sample {sample_id!r}: {n_markers} <image> markers in the conversation, expected "
                             f"{int(has_image)} ({'one image' if has_image else 'no image'} given)")
        if has_image:
            out["image"], out["image_size"] = image, image_size
        elif getattr(self.data_args, "is_multimodal", False):
            crop = self.data_args.image_processor.crop_size
            out["image"] = torch.zeros(3, crop["height"], crop["width"])
            out["image_size"] = (crop["width"], crop["height"])
        return out


@dataclass
class DataCollatorForSupervisedDataset:
    """Right-pads input_ids (pad id) and labels (IGNORE_INDEX), truncates to model_max_length; images are
    stacked when they share a shape, else given as a list."""

    tokenizer: transformers.PreTrainedTokenizerBase

    def __call__(self, instances: Sequence[Dict]) -> Dict[str, torch.Tensor]:
        max_len = self.tokenizer.model_max_length
        ids = [inst["input_ids"][:max_len] for inst in instances]
        labels = [inst["labels"][:max_len] for inst in instances]
        width = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id
        batch_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
        batch_labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for n, (x, y) in enumerate(zip(ids, labels)):
            batch_ids[n, : len(x)], batch_labels[n, : len(y)], attention_mask[n, : len(x)] = x, y, True
        batch = {"input_ids": batch_ids, "labels": batch_labels, "attention_mask": attention_mask}
        if "image" in instances[0]:
            images = [inst["image"] for inst in instances]
            same = all(x is not None and x.shape == images[0].shape for x in images)
            batch["images"] = torch.stack(images) if same else images
            batch["image_sizes"] = [inst.get("image_size") for inst in instances]
        return batch


def make_supervised_data_module(tokenizer, data_args) -> Dict:
    train_dataset = LazySupervisedDataset(data_path=data_args.data_path, tokenizer=tokenizer, data_args=data_args)
    return dict(train_dataset=train_dataset, eval_dataset=None,
                data_collator=DataCollatorForSupervisedDataset(tokenizer=tokenizer))


# ---- model set-up -------------------------------------------------------------------------------
def find_all_linear_names(model):
    """Names (last component) of the LLM's nn.Linear leaves: the LoRA targets (no projector, tower, lm_head)."""
    names = set()
    for name, module in model.named_modules():
        if any(k in name for k in ("mm_projector", "vision_tower", "vision_resampler")):
            continue
        if isinstance(module, torch.nn.Linear):
            names.add(name.split(".")[-1])
    names.discard("lm_head")
    return sorted(names)


def load_llm(model_args, training_args, attn_implementation, dtype):
    """LlavaLlamaForCausalLM / LlavaMistralForCausalLM from a plain LLM or a LLaVA checkpoint (with a
    vision tower), else the plain causal LM."""
    from llava.model.builder import from_pretrained, llava_config, model_class_for, read_config, resolve_checkpoint
    from llava.model.hf_convert import is_llava_hf, load_llava_hf

    path = model_args.model_name_or_path
    local = resolve_checkpoint(path, "model_name_or_path")
    kwargs = {"dtype": dtype, "cache_dir": training_args.cache_dir}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if training_args.bits in (4, 8):
        from transformers import BitsAndBytesConfig

        kwargs["device_map"] = {"": training_args.device}
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=training_args.bits == 4, load_in_8bit=training_args.bits == 8,
            llm_int8_skip_modules=["mm_projector"], bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=training_args.double_quant, bnb_4bit_quant_type=training_args.quant_type)
    cfg = read_config(local)
    if is_llava_hf(cfg):  # transformers' own LLaVA layout: converted on load, trained as ours
        return load_llava_hf(local, cfg, **kwargs)[0]
    if model_args.vision_tower is None:
        return from_pretrained(transformers.AutoModelForCausalLM, local, **kwargs)
    if "mpt" in cfg.get("model_type", ""):
        raise NotImplementedError("MPT language models are not supported in this fork")
    config = llava_config(local, cfg)
    return from_pretrained(model_class_for(config), local, config=config, **kwargs)


def initialize_vision_modules(model, model_args):
    """Upstream's LlavaMetaModel.initialize_vision_modules: build/load the tower, write the mm_* config,
    build the projector (or make an existing one trainable) and load `pretrain_mm_mlp_adapter`."""
    from llava.model.multimodal_encoder.builder import build_vision_tower
    from llava.model.multimodal_projector.builder import build_vision_projector

    from llava.model.hf_convert import TOWER_FOLDER

    inner, config = model.get_model(), model.config
    tower = inner.get_vision_tower()
    # a model converted from llava-hf carries its own tower (saved in the checkpoint): it stays
    carried = tower is not None and tower.is_loaded and tower.vision_tower_name == TOWER_FOLDER
    config.mm_vision_tower = TOWER_FOLDER if carried else model_args.vision_tower
    config.mm_vision_select_layer = model_args.mm_vision_select_layer
    config.mm_vision_select_feature = model_args.mm_vision_select_feature
    config.mm_patch_merge_type = model_args.mm_patch_merge_type
    if not carried and (tower is None or tower.vision_tower_name != model_args.vision_tower or not tower.is_loaded):
        tower = build_vision_tower(config)  # loads the tower (frozen)
        inner.vision_tower = tower
    tower.select_layer = model_args.mm_vision_select_layer
    tower.select_feature = model_args.mm_vision_select_feature
    config.use_mm_proj = True
    config.mm_projector_type = getattr(model_args, "mm_projector_type", "linear")
    config.mm_hidden_size = tower.hidden_size
    if getattr(inner, "mm_projector", None) is None:
        inner.mm_projector = build_vision_projector(config)
        if "unpad" in model_args.mm_patch_merge_type:
            std = 1 / torch.sqrt(torch.tensor(config.hidden_size, dtype=torch.float32))
            inner.image_newline = torch.nn.Parameter(torch.randn(config.hidden_size) * std)
    else:
        for p in inner.mm_projector.parameters():
            p.requires_grad = True
    if model_args.pretrain_mm_mlp_adapter is not None:
        weights = torch.load(model_args.pretrain_mm_mlp_adapter, map_location="cpu", weights_only=True)
        state = {k.split("mm_projector.", 1)[1]: v for k, v in weights.items() if "mm_projector." in k}
        if not state:
            raise ValueError(f"{model_args.pretrain_mm_mlp_adapter} holds no mm_projector weights")
        inner.mm_projector.load_state_dict(state)
    return tower


def set_trainable(model, model_args, training_args):
    inner = model.get_model()
    if model_args.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        inner.mm_projector.requires_grad_(True)
    if training_args.freeze_mm_mlp_adapter:
        inner.mm_projector.requires_grad_(False)
    inner.get_vision_tower().requires_grad_(False)


def configure_tokenizer(tokenizer, model, model_args):
    """Pad token and template per --version (upstream's rules)."""
    version = model_args.version
    if version == "v0":
        if tokenizer.pad_token is None:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    elif version == "v0.5":
        tokenizer.pad_token = tokenizer.unk_token
    else:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    conv = conversation_lib.conv_templates.get(version, conversation_lib.conv_templates["vicuna_v1"])
    conversation_lib.default_conversation = conv
    return conv


def check_training_pruning(pruning):
    if pruning.stage == "decoder":
        raise ValueError(f"--pruning-method {pruning.method} prunes inside the LLM at inference only; "
                         f"train with a method that prunes before the LLM (e.g. agile)")
    return pruning


# ---- saving -------------------------------------------------------------------------------------
def gathered_cpu(param):
    """A CPU copy of a parameter; under DeepSpeed ZeRO-3 (partitioned, `ds_id`) gathered first."""
    if hasattr(param, "ds_id"):
        from deepspeed import zero

        with zero.GatheredParameters([param]):
            return param.data.detach().cpu().clone()
    return param.detach().cpu().clone()


def _cpu_state(named):
    return {k: gathered_cpu(v) for k, v in named}


def get_mm_adapter_state(model, keys_to_match=("mm_projector", "vision_resampler")):
    return _cpu_state((k, t) for k, t in model.named_parameters() if any(m in k for m in keys_to_match))


def save_projector(model, output_dir, use_im_start_end=False):
    """Stage-1 layout: config.json + mm_projector.bin (full parameter names)."""
    keys = ["mm_projector", "vision_resampler"] + (["embed_tokens", "embed_in"] if use_im_start_end else [])
    os.makedirs(output_dir, exist_ok=True)
    model.config.save_pretrained(output_dir)
    torch.save(get_mm_adapter_state(model, keys), os.path.join(output_dir, "mm_projector.bin"))


def embeddings_resized(model):
    """Whether the LLM's vocabulary differs from its base's (PEFT's save_embedding_layers="auto" test, read
    from the base's config.json: PEFT reads it through the LLaVA config class, which says it is not one)."""
    base = model.peft_config["default"].base_model_name_or_path
    config_file = os.path.join(base or "", "config.json")
    if not base or not os.path.isfile(config_file):
        return False
    with open(config_file) as f:
        return json.load(f).get("vocab_size") != model.get_input_embeddings().weight.shape[0]


def lora_state_dict(model, bias="none"):
    """The adapter's tensors (LoRA A/B; biases per --lora_bias), gathered, keyed as PEFT saves them."""
    from peft import get_peft_model_state_dict

    full = {k: gathered_cpu(v) for k, v in model.named_parameters() if "lora_" in k or "bias" in k}
    state = get_peft_model_state_dict(model, state_dict=full, save_embedding_layers=False)
    if bias == "none":
        state = {k: v for k, v in state.items() if "lora_" in k}
    return state


def non_lora_state_dict(model):
    return _cpu_state((k, t) for k, t in model.named_parameters() if "lora_" not in k and t.requires_grad)


def safe_save_model_for_hf_trainer(trainer, output_dir):
    """Projector only with --tune_mm_mlp_adapter (final save to output_dir/mm_projector.bin, or
    <parent>/mm_projector/<checkpoint-name>.bin for a checkpoint-* output_dir), else the full model."""
    args = trainer.args
    if getattr(args, "tune_mm_mlp_adapter", False):
        model = trainer.model
        name = os.path.basename(os.path.normpath(output_dir))
        if not trainer.is_world_process_zero():
            return
        if name.startswith("checkpoint-"):
            folder = os.path.join(os.path.dirname(os.path.normpath(output_dir)), "mm_projector")
            os.makedirs(folder, exist_ok=True)
            keys = ["mm_projector", "vision_resampler"]
            torch.save(get_mm_adapter_state(model, keys), os.path.join(folder, f"{name}.bin"))
        else:
            save_projector(model, output_dir, getattr(args, "use_im_start_end", False))
        return
    if trainer.is_deepspeed_enabled and torch.cuda.is_available():  # DeepSpeed also runs on CPU
        torch.cuda.synchronize()
    trainer.save_model(output_dir)
    copy_tokenizer_model(trainer, output_dir)


def copy_tokenizer_model(trainer, output_dir):
    """Also ship the sentencepiece `tokenizer.model` (upstream's slow-tokenizer layout) next to tokenizer.json."""
    source = getattr(trainer.processing_class, "name_or_path", None)
    if not trainer.is_world_process_zero() or not source or not os.path.isdir(source):
        return
    for name in ("tokenizer.model", "special_tokens_map.json"):
        src, dst = os.path.join(source, name), os.path.join(output_dir, name)
        if os.path.isfile(src) and not os.path.exists(dst):
            shutil.copyfile(src, dst)


# ---- train --------------------------------------------------------------------------------------
@torch_init()  # new modules (projector, LoRA) get torch's init even if disable_torch_init() ran in this process
def train(attn_implementation=None, argv=None):
    """Parse `argv` (default sys.argv[1:]), train, save. Returns the trainer."""
    from llava.model.builder import load_tokenizer, resolve_checkpoint
    from llava.train.llava_trainer import LLaVATrainer

    model_args, data_args, training_args, pruning = parse_checked_args(argv)
    quiet_deepspeed_cpu_notice()
    # --seed before the model is built (the Trainer seeds only later), so new weights (projector, LoRA) are
    # the same for the same command, whatever ran before in the process
    transformers.set_seed(training_args.seed)
    compute_dtype = torch.float16 if training_args.fp16 else (torch.bfloat16 if training_args.bf16 else torch.float32)

    model = load_llm(model_args, training_args, attn_implementation, compute_dtype)
    model.config.use_cache = False
    if model_args.freeze_backbone:
        model.model.requires_grad_(False)
    if training_args.bits in (4, 8):
        from peft import prepare_model_for_kbit_training

        with quiet_peft():
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training_args.gradient_checkpointing)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()

    llava_model = model
    if training_args.lora_enable:
        from peft import LoraConfig, get_peft_model

        lora_config = LoraConfig(r=training_args.lora_r, lora_alpha=training_args.lora_alpha,
                                 target_modules=find_all_linear_names(model), lora_dropout=training_args.lora_dropout,
                                 bias=training_args.lora_bias, task_type="CAUSAL_LM")
        if training_args.bits == 16 and compute_dtype != torch.float32:
            model.to(compute_dtype)
        rank0_print("Adding LoRA adapters...")
        with quiet_peft():
            model = get_peft_model(model, lora_config)

    tokenizer = load_tokenizer(resolve_checkpoint(model_args.model_name_or_path, "model_name_or_path"))
    tokenizer.model_max_length = training_args.model_max_length
    tokenizer.padding_side = "right"
    data_args.conv = configure_tokenizer(tokenizer, llava_model, model_args)
    # the template the model is trained with, so the CLI and the generators use it (llava.settings)
    llava_model.config.conv_mode = next(name for name, c in conversation_lib.conv_templates.items()
                                        if c is data_args.conv)

    if model_args.vision_tower is not None:
        tower = initialize_vision_modules(llava_model, model_args)
        device = training_args.device
        tower.to(dtype=compute_dtype, device=device)
        llava_model.get_model().mm_projector.to(device=device, dtype=compute_dtype)
        data_args.image_processor = tower.image_processor
        data_args.image_grid_pinpoints = getattr(llava_model.config, "image_grid_pinpoints", None)
        data_args.is_multimodal = True
        cfg = llava_model.config
        cfg.architectures = [type(llava_model).__name__]
        cfg.image_aspect_ratio = data_args.image_aspect_ratio
        cfg.tokenizer_padding_side = tokenizer.padding_side
        cfg.tokenizer_model_max_length = tokenizer.model_max_length
        cfg.tune_mm_mlp_adapter = training_args.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
        cfg.freeze_mm_mlp_adapter = training_args.freeze_mm_mlp_adapter
        set_trainable(llava_model, model_args, training_args)
        cfg.mm_use_im_start_end = data_args.mm_use_im_start_end = model_args.mm_use_im_start_end
        cfg.mm_projector_lr = training_args.mm_projector_lr
        training_args.use_im_start_end = model_args.mm_use_im_start_end
        cfg.mm_use_im_patch_token = model_args.mm_use_im_patch_token
        llava_model.initialize_vision_tokenizer(model_args, tokenizer=tokenizer)
        # pruning: the same K visual tokens per image as at inference, saved for load_pretrained_model
        llava_model.set_pruning(pruning)
        if pruning.is_active:
            cfg.pruning = pruning.to_dict()
        elif hasattr(cfg, "pruning"):
            del cfg.pruning
    elif pruning.is_active:
        raise ValueError("--pruning-method needs a multimodal model (--vision_tower)")

    rank0_print(f"trainable parameters: {sum(p.numel() for p in model.parameters() if p.requires_grad)}")
    data_module = make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
    trainer = LLaVATrainer(model=model, processing_class=tokenizer, args=training_args, **data_module)

    checkpoints = list(pathlib.Path(training_args.output_dir).glob("checkpoint-*"))
    resumable = [c for c in checkpoints if (c / "trainer_state.json").exists() and not model_args.tune_mm_mlp_adapter]
    trainer.train(resume_from_checkpoint=True if resumable else None)
    trainer.save_state()

    llava_model.config.use_cache = True
    output_dir = training_args.output_dir
    if training_args.lora_enable:
        if training_args.should_save:
            llava_model.config.save_pretrained(output_dir)
            model.save_pretrained(output_dir, state_dict=lora_state_dict(model, training_args.lora_bias),
                                  save_embedding_layers=embeddings_resized(model))
            torch.save(non_lora_state_dict(model), os.path.join(output_dir, "non_lora_trainables.bin"))
    else:
        safe_save_model_for_hf_trainer(trainer=trainer, output_dir=output_dir)
    return trainer


if __name__ == "__main__":
    train()
