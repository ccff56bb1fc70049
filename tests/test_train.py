"""End-to-end training on a tiny generated checkpoint and data set, with pruning on (CPU):
stage 1 (projector only, plain template) -> stage 2 (full, and LoRA); each output loads with
load_pretrained_model and answers through the CLI's ChatSession."""
import json
import os

import pytest
import torch
from PIL import Image

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.model.llava_arch import LlavaMetaForCausalLM
from llava.mm_utils import get_model_name_from_path
from llava.serve.cli import ChatSession
from llava.train.train import train

K = 32


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory):
    from llava.train.make_tiny_dataset import make_tiny_dataset

    ckpt = tiny_checkpoint("projector")  # its OUT-base is a plain LLaMA + tokenizer, as lmsys/vicuna-7b-v1.5
    root = tmp_path_factory.mktemp("train")
    data = make_tiny_dataset(root / "data", num_images=12)
    return {"base": ckpt["model_base"], "tower": ckpt["vision_tower"], "data": data, "root": root}


def common_args(setup, data_key, output_dir, method="agile"):
    return ["--model_name_or_path", setup["base"], "--vision_tower", setup["tower"],
            "--data_path", setup["data"][data_key], "--image_folder", setup["data"]["image_folder"],
            "--mm_projector_type", "mlp2x_gelu", "--mm_vision_select_layer", "-2",
            "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False",
            "--output_dir", str(output_dir), "--per_device_train_batch_size", "2", "--lr_scheduler_type", "constant",
            "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "True",
            "--dataloader_num_workers", "0", "--model_max_length", "512", "--disable_tqdm", "True",
            "--pruning-method", method, "--visual-token-num", str(K)]


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def assert_loss_falls(trainer):
    values = losses(trainer)
    assert trainer.state.global_step >= 24  # a few dozen optimizer steps
    assert len(values) >= 6 and all(torch.isfinite(torch.tensor(values)))
    assert sum(values[-3:]) / 3 < sum(values[:3]) / 3 - 0.05, values


def chat(model_path, model_base, image_file, method="agile"):
    tokenizer, model, processor, _ = load_pretrained_model(model_path, model_base,
                                                           get_model_name_from_path(model_path), device="cpu")
    assert model.pruning_config.method == method and model.pruning_config.visual_token_num == K
    session = ChatSession(tokenizer, model, processor, Image.open(image_file).convert("RGB"), "llava_v1",
                          temperature=0, max_new_tokens=6)
    answer = session.ask("What shape is shown?")
    assert isinstance(answer, str) and answer.strip()
    assert len(model.pruning_records) == 0  # stats off
    return answer


@pytest.fixture
def visual_token_counts(monkeypatch):
    """Number of visual embeddings fed to the LLM per image, for every image the model encodes."""
    counts = []
    original = LlavaMetaForCausalLM.image_embeddings

    def recording(self, images, image_sizes=None):
        blocks = original(self, images, image_sizes)
        counts.extend(b.shape[0] for b in blocks)
        return blocks

    monkeypatch.setattr(LlavaMetaForCausalLM, "image_embeddings", recording)
    return counts


@pytest.fixture(scope="module")
def stage1(setup):
    out = setup["root"] / "llava-tiny-pretrain"
    trainer = train(argv=common_args(setup, "pretrain", out) + [
        "--version", "plain", "--tune_mm_mlp_adapter", "True", "--num_train_epochs", "4",
        "--learning_rate", "2e-2"])
    return out, trainer


def image_file(setup):
    return os.path.join(setup["data"]["image_folder"], "images", "0000_red_circle.png")


@pytest.mark.slow
def test_stage1_projector_only(setup, stage1):
    out, trainer = stage1
    assert sorted(os.listdir(out)) == ["config.json", "mm_projector.bin", "trainer_state.json"]
    state = torch.load(out / "mm_projector.bin", weights_only=True)
    assert sorted(state) == [f"model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")]
    config = json.loads((out / "config.json").read_text())
    assert config["pruning"]["method"] == "agile" and config["pruning"]["visual_token_num"] == K
    assert config["tune_mm_mlp_adapter"] is True and config["mm_vision_tower"] == setup["tower"]
    assert_loss_falls(trainer)
    chat(str(out), setup["base"], image_file(setup))


@pytest.mark.slow
def test_stage2_full_finetune(setup, stage1, visual_token_counts):
    out = setup["root"] / "llava-tiny-full"
    # stage 1 trains with agile; here divprune and fastervlm below (agile's eigen-decomposition per image
    # dominates CPU time on a busy 2-core machine)
    trainer = train(argv=common_args(setup, "finetune", out, method="divprune") + [
        "--version", "v1", "--pretrain_mm_mlp_adapter", str(stage1[0] / "mm_projector.bin"),
        "--image_aspect_ratio", "pad", "--group_by_modality_length", "True", "--num_train_epochs", "3",
        "--learning_rate", "3e-3"])
    # exactly K visual embeddings per image reached the LLM in training (dummy images of text-only rows too)
    assert visual_token_counts and set(visual_token_counts) == {K}
    assert_loss_falls(trainer)
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.model"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlavaLlamaForCausalLM"] and config["pruning"]["visual_token_num"] == K
    chat(str(out), None, image_file(setup), method="divprune")


@pytest.mark.slow
def test_stage2_lora(setup, stage1):
    out = setup["root"] / "llava-tiny-lora"
    trainer = train(argv=common_args(setup, "finetune", out, method="fastervlm") + [
        "--version", "v1", "--pretrain_mm_mlp_adapter", str(stage1[0] / "mm_projector.bin"),
        "--image_aspect_ratio", "pad", "--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16",
        "--mm_projector_lr", "2e-3", "--num_train_epochs", "4", "--learning_rate", "4e-3"])
    assert_loss_falls(trainer)
    assert {"adapter_config.json", "non_lora_trainables.bin", "config.json"} <= set(os.listdir(out))
    non_lora = torch.load(out / "non_lora_trainables.bin", weights_only=True)
    assert non_lora and all("mm_projector" in k for k in non_lora)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == setup["base"]
    chat(str(out), setup["base"], image_file(setup), method="fastervlm")


@pytest.mark.slow
def test_pruned_splice_keeps_labels_aligned(setup, stage1):
    """Labels after the splice: image positions IGNORE, every text label kept in order, K visual slots."""
    from llava.train.train import DataCollatorForSupervisedDataset, LazySupervisedDataset

    tokenizer, model, processor, _ = load_pretrained_model(str(stage1[0]), setup["base"], "llava-tiny-pretrain",
                                                           device="cpu")
    tokenizer.pad_token = tokenizer.unk_token
    args = type("A", (), {})()
    from llava.conversation import conv_templates

    args.image_folder, args.image_aspect_ratio, args.is_multimodal = setup["data"]["image_folder"], "pad", True
    args.image_processor, args.conv, args.mm_use_im_start_end = processor, conv_templates["v1"], False
    ds = LazySupervisedDataset(setup["data"]["finetune"], tokenizer, args)
    batch = DataCollatorForSupervisedDataset(tokenizer)([ds[0], ds[1], ds[len(ds) - 1]])
    _, _, mask, _, embeds, labels = model.prepare_inputs_labels_for_multimodal(
        batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"])
    for row in range(3):
        n_text = int(batch["attention_mask"][row].sum())
        n_img = int((batch["input_ids"][row] == IMAGE_TOKEN_INDEX).sum())
        assert int(mask[row].sum()) == n_text - n_img + K * n_img
        before = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        after = labels[row][labels[row] != IGNORE_INDEX]
        assert torch.equal(before, after)
