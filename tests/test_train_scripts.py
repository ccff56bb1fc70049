"""scripts/v1_5 training recipes and the DeepSpeed configs: syntax, upstream hyper-parameters, pruning
variables passed through; the recipes run (no DeepSpeed, CPU) on the tiny checkpoint for a few steps."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["pretrain", "finetune", "finetune_lora", "finetune_task", "finetune_task_lora"]


def script(name):
    return os.path.join(ROOT, "scripts", "v1_5", f"{name}.sh")


@pytest.mark.parametrize("name", SCRIPTS)
def test_recipe_scripts(name):
    subprocess.run(["bash", "-n", script(name)], check=True)
    text = open(script(name)).read()
    assert 'source "$(dirname "$0")/train_common.sh"' in text  # the shared launcher/pruning/DeepSpeed part
    text += open(script("train_common")).read()
    lr = {"pretrain": "1e-3", "finetune": "2e-5", "finetune_lora": "2e-4", "finetune_task": "2e-5",
          "finetune_task_lora": "2e-4"}[name]
    assert f"--learning_rate {lr}" in text and "--pruning-method \"$METHOD\"" in text
    assert "llava/train/train_mem.py" in text and "--mm_projector_type mlp2x_gelu" in text
    assert ("--version plain" if name == "pretrain" else "--version v1") in text
    assert ("--lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5" in text) == name.endswith("lora")
    assert ("--pretrain_mm_mlp_adapter" in text) == (name in ("finetune", "finetune_lora"))
    assert ("zero2.json" in text) == (name == "pretrain")


@pytest.mark.parametrize("name,stage", [("zero2", 2), ("zero3", 3), ("zero3_offload", 3)])
def test_deepspeed_configs(name, stage):
    cfg = json.load(open(os.path.join(ROOT, "scripts", f"{name}.json")))
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["bf16"]["enabled"] == "auto" and cfg["fp16"]["enabled"] == "auto"
    assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["gradient_accumulation_steps"] == "auto"
    if name == "zero3_offload":
        assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
        assert cfg["optimizer"]["type"] == "AdamW" and cfg["scheduler"]["type"] == "WarmupLR"


@pytest.mark.slow
def test_recipes_run_without_deepspeed(tiny_checkpoint, tmp_path):
    """pretrain.sh then finetune.sh, single process on CPU (DEEPSPEED_CONFIG= LAUNCHER=python), with pruning."""
    from llava.model.builder import load_pretrained_model
    from llava.train.make_tiny_dataset import make_tiny_dataset

    ckpt = tiny_checkpoint("projector")
    data = make_tiny_dataset(tmp_path / "data", num_images=4)
    env = dict(os.environ, MODEL=ckpt["model_base"], VISION_TOWER=ckpt["vision_tower"],
               IMAGE_FOLDER=data["image_folder"], DEEPSPEED_CONFIG="", LAUNCHER=sys.executable,
               METHOD="divprune", K="16", HF_HUB_OFFLINE="1")
    quick = ["--bf16", "False", "--tf32", "False", "--use_cpu", "True", "--max_steps", "2",
             "--per_device_train_batch_size", "2", "--dataloader_num_workers", "0", "--disable_tqdm", "True",
             "--gradient_checkpointing", "False", "--save_strategy", "no"]
    stage1, stage2 = tmp_path / "llava-pretrain", tmp_path / "llava-finetune"
    for name, extra in (("pretrain", dict(DATA_PATH=data["pretrain"], OUTPUT_DIR=str(stage1))),
                        ("finetune", dict(DATA_PATH=data["finetune"], OUTPUT_DIR=str(stage2),
                                          PRETRAIN_MM_MLP_ADAPTER=str(stage1 / "mm_projector.bin")))):
        res = subprocess.run(["bash", script(name), *quick], cwd=ROOT, env={**env, **extra}, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    for out in (stage1, stage2):
        pruning = json.load(open(out / "config.json"))["pruning"]
        assert (pruning["method"], pruning["visual_token_num"]) == ("divprune", 16)
    _, model, _, _ = load_pretrained_model(str(stage2), None, "llava-finetune", device="cpu")
    assert model.pruning_config.method == "divprune" and model.pruning_config.visual_token_num == 16
