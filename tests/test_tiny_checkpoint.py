"""The generator writes the published layouts, offline and deterministically."""
import filecmp
import json
import os

import torch
from transformers import CLIPVisionModel

from llava.tools.make_tiny_checkpoint import make_checkpoint


def test_v15_layout_matches_the_published_checkpoint(tiny_checkpoint):
    path = tiny_checkpoint("v1.5")["model_path"]
    files = set(os.listdir(path))
    assert {"config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "mm_projector.bin",
            "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"} <= files
    cfg = json.load(open(os.path.join(path, "config.json")))
    assert cfg["model_type"] == "llava" and cfg["architectures"] == ["LlavaLlamaForCausalLM"]
    assert cfg["mm_vision_select_layer"] == -2 and cfg["mm_projector_type"] == "mlp2x_gelu"
    assert cfg["image_aspect_ratio"] == "pad" and cfg["mm_use_im_patch_token"] is False
    index = json.load(open(os.path.join(path, "pytorch_model.bin.index.json")))["weight_map"]
    keys = set()
    for shard in set(index.values()):
        keys |= set(torch.load(os.path.join(path, shard), weights_only=True))
    assert keys == set(index)
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.bias", "lm_head.weight"} <= keys
    assert not any("vision_tower" in k for k in keys)  # the official weights do not carry CLIP either
    proj = torch.load(os.path.join(path, "mm_projector.bin"), weights_only=True)
    assert set(proj) == {"model.mm_projector.0.weight", "model.mm_projector.0.bias",
                         "model.mm_projector.2.weight", "model.mm_projector.2.bias"}


def test_tower_has_clip_l_336_geometry(tiny_checkpoint):
    tower = CLIPVisionModel.from_pretrained(tiny_checkpoint("v1.5")["vision_tower"])
    out = tower(torch.zeros(1, 3, 336, 336), output_hidden_states=True)
    assert out.last_hidden_state.shape[1] == 577  # 24 x 24 patches + CLS


def test_tokenizer_has_llama_special_layout(tiny_tokenizer):
    assert (tiny_tokenizer.unk_token_id, tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id) == (0, 1, 2)
    assert tiny_tokenizer.convert_ids_to_tokens([3, 13, 258]) == ["<0x00>", "<0x0A>", "<0xFF>"]


def test_lora_and_projector_layouts(tiny_checkpoint):
    lora = tiny_checkpoint("lora")
    assert {"adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin", "config.json"} <= \
        set(os.listdir(lora["model_path"]))
    keys = torch.load(os.path.join(lora["model_path"], "non_lora_trainables.bin"), weights_only=True)
    assert all(k.startswith("base_model.model.model.mm_projector.") for k in keys)
    assert json.load(open(os.path.join(lora["model_base"], "config.json")))["model_type"] == "llama"
    proj = tiny_checkpoint("projector")
    assert set(os.listdir(proj["model_path"])) == {"config.json", "mm_projector.bin"}
    assert json.load(open(os.path.join(proj["model_path"], "config.json")))["tune_mm_mlp_adapter"] is True


def test_deterministic_from_seed(tmp_path):
    a = make_checkpoint(str(tmp_path / "a"), seed=3)
    b = make_checkpoint(str(tmp_path / "b"), seed=3)
    c = make_checkpoint(str(tmp_path / "c"), seed=4)
    for name in ("tokenizer.model", "mm_projector.bin"):
        assert filecmp.cmp(os.path.join(a["model_path"], name), os.path.join(b["model_path"], name), shallow=False)
    shard = "pytorch_model-00001-of-00002.bin"
    sa, sb, sc = (torch.load(os.path.join(x["model_path"], shard), weights_only=True) for x in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    ta, tb = (CLIPVisionModel.from_pretrained(x["vision_tower"]).state_dict() for x in (a, b))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
