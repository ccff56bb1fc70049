"""DeepSpeed ZeRO-2 and ZeRO-3 through the recipe scripts (DeepSpeed's CPU accelerator, one process)."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_zero2_and_zero3_train_the_same_weights_and_save_a_loadable_model(tiny_checkpoint, tmp_path):
    pytest.importorskip("deepspeed")
    if shutil.which("deepspeed", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("the deepspeed launcher is not installed next to this python")
    from safetensors.torch import load_file

    from llava.model.builder import load_pretrained_model
    from llava.train.make_tiny_dataset import make_tiny_dataset

    ckpt = tiny_checkpoint("projector")
    data = make_tiny_dataset(tmp_path / "data", num_images=4)
    launcher = f"{os.path.join(os.path.dirname(sys.executable), 'deepspeed')} --num_gpus 1 --master_port {free_port()}"
    env = dict(os.environ, MODEL=ckpt["model_base"], VISION_TOWER=ckpt["vision_tower"], IMAGE_FOLDER=data["image_folder"],
               METHOD="agile", K="16", HF_HUB_OFFLINE="1", LAUNCHER=launcher,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    quick = ["--bf16", "False", "--tf32", "False", "--max_steps", "2", "--per_device_train_batch_size", "2",
             "--dataloader_num_workers", "0", "--disable_tqdm", "True", "--gradient_checkpointing", "False",
             "--save_strategy", "no"]
    runs = [("pretrain", "zero2", dict(DATA_PATH=data["pretrain"], OUTPUT_DIR=str(tmp_path / "stage1")))]
    for zero in ("zero2", "zero3"):
        runs.append(("finetune", zero, dict(DATA_PATH=data["finetune"], OUTPUT_DIR=str(tmp_path / zero),
                                            PRETRAIN_MM_MLP_ADAPTER=str(tmp_path / "stage1" / "mm_projector.bin"))))
    for script, zero, extra in runs:
        env["LAUNCHER"] = launcher.replace(launcher.split()[-1], str(free_port()))
        res = subprocess.run(["bash", f"scripts/v1_5/{script}.sh", *quick], cwd=ROOT, capture_output=True, text=True,
                             env={**env, **extra, "DEEPSPEED_CONFIG": f"scripts/{zero}.json"}, timeout=600)
        assert res.returncode == 0, f"{script} {zero}: {res.stdout[-2000:]} {res.stderr[-2000:]}"
    a = load_file(str(tmp_path / "zero2" / "model.safetensors"))
    b = load_file(str(tmp_path / "zero3" / "model.safetensors"))  # gathered from the ZeRO-3 partitions
    assert set(a) == set(b) and all(a[k].shape == b[k].shape and a[k].numel() > 0 for k in a)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-5
    assert json.load(open(tmp_path / "zero3" / "config.json"))["pruning"]["visual_token_num"] == 16
    _, model, _, _ = load_pretrained_model(str(tmp_path / "zero3"), None, "llava-zero3", device="cpu")
    assert model.pruning_config.method == "agile"
