"""The tiny-checkpoint generator writes the published layouts, offline and deterministically."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from llava.tools import make_tiny_checkpoint as mtc
from llava.tools.make_tiny_checkpoint import make_checkpoint, make_vision_tower

PROJECTOR_KEYS = {"model.mm_projector.0.weight", "model.mm_projector.0.bias",
                  "model.mm_projector.2.weight", "model.mm_projector.2.bias"}
TOKENIZER_FILES = {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"}


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def load_sharded(path):
    """Every tensor of a sharded checkpoint, checking that the index and the shards agree."""
    names = os.listdir(path)
    index_name = "model.safetensors.index.json" if "model.safetensors.index.json" in names else \
        "pytorch_model.bin.index.json"
    weight_map = read_json(path, index_name)["weight_map"]
    state = {}
    for shard in sorted(set(weight_map.values())):
        assert os.path.isfile(os.path.join(path, shard)), shard
        if shard.endswith(".safetensors"):
            with safe_open(os.path.join(path, shard), "pt") as f:
                part = {k: f.get_tensor(k) for k in f.keys()}
        else:
            part = torch.load(os.path.join(path, shard), weights_only=True)
        assert all(weight_map[k] == shard for k in part)
        state.update(part)
    assert set(state) == set(weight_map)
    return state


def tree_digest(*folders):
    """{relative path: sha256} of every file under the folders (links followed)."""
    out = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, os.path.dirname(folder))] = hashlib.sha256(f.read()).hexdigest()
    return out


# ---- tokenizer ----------------------------------------------------------------------------------
def test_tokenizer_files_and_llama_special_layout(tiny_tokenizer_dir, tiny_tokenizer):
    assert set(os.listdir(tiny_tokenizer_dir)) == TOKENIZER_FILES
    cfg = read_json(tiny_tokenizer_dir, "tokenizer_config.json")
    assert cfg["tokenizer_class"] == "LlamaTokenizer" and cfg["legacy"] is False
    assert (cfg["add_bos_token"], cfg["add_eos_token"], cfg["pad_token"]) == (True, False, "<unk>")
    assert (cfg["model_max_length"], cfg["padding_side"]) == (2048, "right")
    tok = tiny_tokenizer
    assert type(tok).__name__ == "LlamaTokenizer"  # what AutoTokenizer gives on transformers 5 (use_fast ignored)
    assert len(tok) == 1000
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert tok.convert_ids_to_tokens(list(range(3, 259))) == [f"<0x{b:02X}>" for b in range(256)]
    ids = tok("USER: hello\nASSISTANT:").input_ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert ids[0] == 1 and 2 not in ids  # BOS added, no EOS
    assert pieces[:4] == ["<s>", "▁USER", ":", "▁hello"] and "<0x0A>" in pieces  # "\n" only by byte fallback
    assert tok("<s> x </s>").input_ids.count(2) == 1  # special tokens are recognised in text
    assert len(tok("2048").input_ids) == 1 + 1 + 4  # BOS, dummy-prefix space, then one piece per digit


def test_tokenizer_trained_with_llama_settings(tiny_tokenizer_dir):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    with open(os.path.join(tiny_tokenizer_dir, "tokenizer.model"), "rb") as f:
        proto.ParseFromString(f.read())
    t, n = proto.trainer_spec, proto.normalizer_spec
    assert t.model_type == pb.TrainerSpec.BPE and t.byte_fallback and t.split_digits
    assert t.allow_whitespace_only_pieces and (t.unk_id, t.bos_id, t.eos_id, t.pad_id) == (0, 1, 2, -1)
    assert n.name == "identity" and n.add_dummy_prefix and not n.remove_extra_whitespaces
    assert not any("\n" in p.piece for p in proto.pieces)


# ---- vision tower -------------------------------------------------------------------------------
def test_tower_loads_with_clip_l_336_geometry(tiny_vision_tower_dir):
    with safe_open(os.path.join(tiny_vision_tower_dir, "model.safetensors"), "pt") as f:
        assert all(k.startswith("vision_model.") for k in f.keys())  # the published CLIP key names
    tower, info = CLIPVisionModel.from_pretrained(tiny_vision_tower_dir, output_loading_info=True,
                                                  attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        out = tower(torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(0)),
                    output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 577, 64)  # 24 x 24 patches + CLS
    cls_row = out.attentions[-2][:, :, 0, 1:].mean(1)  # [2, 576], the layer LLaVA selects
    top = cls_row.topk(57, dim=-1).values.sum(-1) / cls_row.sum(-1)
    assert (top > 0.25).all()  # far from uniform (uniform would give 0.1)


def test_tower_image_processor_is_clip_l_336(tiny_vision_tower_dir):
    cfg = read_json(tiny_vision_tower_dir, "preprocessor_config.json")
    assert cfg["image_processor_type"] == "CLIPImageProcessor"
    assert cfg["size"] == {"shortest_edge": 336} and cfg["crop_size"] == {"height": 336, "width": 336}
    assert cfg["image_mean"] == mtc.CLIP_MEAN and cfg["image_std"] == mtc.CLIP_STD
    assert cfg["do_convert_rgb"] and cfg["do_center_crop"] and cfg["resample"] == 3
    assert abs(cfg["rescale_factor"] - 1 / 255) < 1e-12


# ---- full checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["v1.5", "v1.6", "v1.6-mistral"])
def test_full_checkpoint_layout(tiny_checkpoint, kind):
    ckpt = tiny_checkpoint(kind)
    path = ckpt["model_path"]
    assert ckpt["model_base"] is None and os.path.isfile(os.path.join(ckpt["vision_tower"], "config.json"))
    assert set(os.listdir(path)) == TOKENIZER_FILES | {
        "config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "mm_projector.bin"}
    cfg = read_json(path, "config.json")
    mistral = kind == "v1.6-mistral"
    assert cfg["architectures"] == ["LlavaMistralForCausalLM" if mistral else "LlavaLlamaForCausalLM"]
    assert cfg["model_type"] == ("llava_mistral" if mistral else "llava")
    assert cfg["mm_vision_tower"] == ckpt["vision_tower"] and cfg["mm_hidden_size"] == 64
    assert (cfg["mm_vision_select_layer"], cfg["mm_vision_select_feature"]) == (-2, "patch")
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["use_mm_proj"] is True
    assert cfg["mm_use_im_start_end"] is False and cfg["mm_use_im_patch_token"] is False
    assert (cfg["pad_token_id"], cfg["bos_token_id"], cfg["eos_token_id"]) == (0, 1, 2)
    assert cfg["torch_dtype"] == "float16" and cfg["vocab_size"] == 1000 and cfg["tie_word_embeddings"] is False
    if kind == "v1.5":
        assert (cfg["image_aspect_ratio"], cfg["mm_patch_merge_type"]) == ("pad", "flat")
        assert cfg["tokenizer_model_max_length"] == 2048
    else:
        assert (cfg["image_aspect_ratio"], cfg["mm_patch_merge_type"]) == ("anyres", "spatial_unpad")
        assert cfg["image_grid_pinpoints"] == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
        assert cfg["unfreeze_mm_vision_tower"] is False  # no tower in the weights unless asked for
    if mistral:
        assert cfg["sliding_window"] is None

    state = load_sharded(path)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert PROJECTOR_KEYS <= set(state) and not any("vision_tower" in k for k in state)
    assert ("model.image_newline" in state) == kind.startswith("v1.6")
    if kind.startswith("v1.6"):
        assert state["model.image_newline"].shape == (64,)
    proj = torch.load(os.path.join(path, "mm_projector.bin"), weights_only=True)
    assert set(proj) == PROJECTOR_KEYS and all(torch.equal(proj[k], state[k]) for k in proj)
    assert proj["model.mm_projector.0.weight"].shape == (64, 64)

    # the rest is exactly a LLaMA / Mistral: names and shapes load strictly into transformers' own class
    llm_cls, cfg_cls = (MistralForCausalLM, MistralConfig) if mistral else (LlamaForCausalLM, LlamaConfig)
    llm_cfg = cfg_cls(**{k: v for k, v in cfg.items() if not k.startswith(("mm_", "image_", "architectures",
                                                                                "model_type"))})
    llm = llm_cls(llm_cfg)
    llm.load_state_dict({k: v for k, v in state.items() if "mm_projector" not in k and "image_newline" not in k})


def test_safetensors_and_model_type_options(tiny_checkpoint):
    ckpt = tiny_checkpoint("v1.5", safetensors=True, model_type="llava_llama")
    names = set(os.listdir(ckpt["model_path"]))
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
            "model.safetensors.index.json", "mm_projector.bin"} <= names
    assert not any(n.startswith("pytorch_model") for n in names)
    assert read_json(ckpt["model_path"], "config.json")["model_type"] == "llava_llama"
    assert PROJECTOR_KEYS <= set(load_sharded(ckpt["model_path"]))


@pytest.mark.parametrize("kind", ["v1.5", "v1.6"])
def test_tower_in_weights(tiny_checkpoint, kind):
    ckpt = tiny_checkpoint(kind, tower_in_weights=True)
    state = load_sharded(ckpt["model_path"])
    prefix = "model.vision_tower.vision_tower."
    embedded = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    with safe_open(os.path.join(ckpt["vision_tower"], "model.safetensors"), "pt") as f:
        tower = {k: f.get_tensor(k) for k in f.keys()}
    assert set(embedded) == set(tower)
    same = all(torch.equal(embedded[k], tower[k].half()) for k in tower)
    cfg = read_json(ckpt["model_path"], "config.json")
    if kind == "v1.6":  # as released: the tower was fine-tuned, and the config says to load it from here
        assert not same and cfg["unfreeze_mm_vision_tower"] is True
        w = "vision_model.encoder.layers.0.mlp.fc1.weight"
        assert torch.allclose(embedded[w].float(), tower[w], atol=0.05 * tower[w].abs().max().item())
    else:  # as the training code saves a frozen tower
        assert same and "unfreeze_mm_vision_tower" not in cfg


# ---- LoRA and projector-only --------------------------------------------------------------------
def test_lora_layout(tiny_checkpoint):
    ckpt = tiny_checkpoint("lora")
    path, base = ckpt["model_path"], ckpt["model_base"]
    assert base == path + "-base"
    assert set(os.listdir(path)) == {"config.json", "adapter_config.json", "adapter_model.safetensors",
                                     "non_lora_trainables.bin", "README.md"}
    cfg = read_json(path, "config.json")
    assert cfg["model_type"] == "llava_llama" and cfg["architectures"] == ["LlavaLlamaForCausalLM"]
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["tune_mm_mlp_adapter"] is False
    adapter = read_json(path, "adapter_config.json")
    assert adapter["base_model_name_or_path"] == base and adapter["task_type"] == "CAUSAL_LM"
    assert adapter["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"])
    with safe_open(os.path.join(path, "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert len(keys) == 2 * 7 * 2 and all(k.startswith("base_model.model.model.layers.") for k in keys)
    non_lora = torch.load(os.path.join(path, "non_lora_trainables.bin"), weights_only=True)
    assert set(non_lora) == {"base_model.model." + k for k in PROJECTOR_KEYS}

    base_cfg = read_json(base, "config.json")
    assert base_cfg["model_type"] == "llama" and base_cfg["architectures"] == ["LlamaForCausalLM"]
    assert TOKENIZER_FILES <= set(os.listdir(base))
    assert not any(k.startswith("model.mm_projector") for k in load_sharded(base))


def test_lora_adapter_loads_with_peft_and_merging_changes_outputs(tiny_checkpoint):
    from peft import PeftModel

    from llava.model.compat import quiet_peft

    ckpt = tiny_checkpoint("lora")
    base = LlamaForCausalLM.from_pretrained(ckpt["model_base"], dtype=torch.float32)
    ids = torch.tensor([[1, 50, 300, 700, 13, 42]])
    with torch.no_grad():
        before = base(ids).logits
    with quiet_peft():
        model = PeftModel.from_pretrained(base, ckpt["model_path"])
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 2 * 7 and all(p.abs().sum() > 0 for p in lora_b)  # loaded, not PEFT's zero init
    merged = model.merge_and_unload()
    with torch.no_grad():
        after = merged(ids).logits
    assert (after - before).abs().max() > 1e-3


def test_projector_layout(tiny_checkpoint):
    ckpt = tiny_checkpoint("projector")
    path = ckpt["model_path"]
    assert set(os.listdir(path)) == {"config.json", "mm_projector.bin"}
    cfg = read_json(path, "config.json")
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llava"
    assert cfg["tune_mm_mlp_adapter"] is True and cfg["mm_vision_tower"] == ckpt["vision_tower"]
    proj = torch.load(os.path.join(path, "mm_projector.bin"), weights_only=True)
    assert set(proj) == PROJECTOR_KEYS
    assert read_json(ckpt["model_base"], "config.json")["model_type"] == "llama"


# ---- hub cache ----------------------------------------------------------------------------------
def test_tower_in_hf_cache_loads_offline_by_hub_name(tiny_checkpoint, tmp_path):
    cache = tmp_path / "hub"
    ckpt = tiny_checkpoint("v1.5", hf_cache=str(cache))
    assert read_json(ckpt["model_path"], "config.json")["mm_vision_tower"] == "openai/clip-vit-large-patch14-336"
    repo = cache / "models--openai--clip-vit-large-patch14-336"
    commit = (repo / "refs" / "main").read_text()
    assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    assert ckpt["vision_tower"] == str(repo / "snapshots" / commit)
    assert os.path.realpath(repo / "snapshots" / commit / "model.safetensors").startswith(str(repo / "blobs"))

    # in this process huggingface_hub has already read HF_HUB_CACHE, so name the cache explicitly
    tower = CLIPVisionModel.from_pretrained("openai/clip-vit-large-patch14-336", cache_dir=str(cache),
                                           local_files_only=True)
    assert tower.config.hidden_size == 64
    # a fresh process takes the documented route: environment variables only
    code = ("from transformers import CLIPVisionModel, CLIPImageProcessor\n"
            "m = CLIPVisionModel.from_pretrained('openai/clip-vit-large-patch14-336')\n"
            "p = CLIPImageProcessor.from_pretrained('openai/clip-vit-large-patch14-336')\n"
            "print(m.config.hidden_size, p.crop_size['height'])\n")
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["64", "336"]


def test_hf_cache_never_shadows_a_real_download(tmp_path):
    repo = tmp_path / "hub" / "models--openai--clip-vit-large-patch14-336"
    real = repo / "snapshots" / ("a" * 40)
    real.mkdir(parents=True)
    (real / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": {"hidden_size": 1024}}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    with pytest.raises(ValueError, match="already holds a real"):
        make_checkpoint(str(tmp_path / "llava-x"), hf_cache=str(tmp_path / "hub"))
    assert (repo / "refs" / "main").read_text() == "a" * 40


# ---- determinism and the CLI --------------------------------------------------------------------
def test_rerun_gives_identical_bytes_and_seed_changes_weights(tmp_path):
    out = tmp_path / "llava-v1.6-tiny"
    a = make_checkpoint(str(out), kind="v1.6", seed=3)
    first = tree_digest(a["model_path"], a["vision_tower"])
    make_checkpoint(str(out), kind="v1.6", seed=3)
    assert tree_digest(a["model_path"], a["vision_tower"]) == first

    c = make_checkpoint(str(tmp_path / "other"), kind="v1.6", seed=4)
    sa, sc = load_sharded(a["model_path"]), load_sharded(c["model_path"])
    assert set(sa) == set(sc) and not any(torch.equal(sa[k], sc[k]) for k in sa if "norm" not in k)
    ta = CLIPVisionModel.from_pretrained(a["vision_tower"]).state_dict()
    tc = CLIPVisionModel.from_pretrained(c["vision_tower"]).state_dict()
    assert not torch.equal(ta["embeddings.patch_embedding.weight"], tc["embeddings.patch_embedding.weight"])


def test_cli_in_a_fresh_process_reproduces_lora_bytes(tmp_path):
    """The CLI, in another process with another hash seed, rewrites the same bytes (PEFT's files included)."""
    out = tmp_path / "llava-v1.5-tiny-lora"
    ckpt = make_checkpoint(str(out), kind="lora", seed=1)
    folders = (ckpt["model_path"], ckpt["model_base"], ckpt["vision_tower"])
    first = tree_digest(*folders)
    env = dict(os.environ, PYTHONHASHSEED="12345", TRANSFORMERS_VERBOSITY="error")
    run = subprocess.run([sys.executable, "-m", "llava.tools.make_tiny_checkpoint", str(out), "--kind", "lora",
                          "--seed", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == ckpt
    assert tree_digest(*folders) == first


def test_given_vision_tower_is_reused(tmp_path):
    tower = tmp_path / "my-tower"
    make_vision_tower(str(tower), seed=7)
    before = tree_digest(str(tower))
    ckpt = make_checkpoint(str(tmp_path / "llava-x"), seed=0, vision_tower=str(tower))
    assert ckpt["vision_tower"] == str(tower) and tree_digest(str(tower)) == before
    assert not os.path.exists(str(tmp_path / "llava-x") + "-clip-vit-tiny-patch14-336")


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="Unknown kind"):
        make_checkpoint(str(tmp_path / "x"), kind="v2")
    with pytest.raises(SystemExit) as exc:
        mtc.main([str(tmp_path / "x"), "--vision-tower", str(tmp_path / "t"), "--hf-cache", str(tmp_path / "h")])
    assert exc.value.code == 2 and "either vision_tower or hf_cache" in capsys.readouterr().err


def test_generated_weights_do_not_depend_on_disable_torch_init(tmp_path):
    """The eval and CLI entry points call disable_torch_init() (process-wide, as upstream); a checkpoint
    generated afterwards in the same process must still get real, seeded weights."""
    from safetensors.torch import load_file

    from llava.tools.make_tiny_checkpoint import make_vision_tower
    from llava.utils import disable_torch_init

    make_vision_tower(str(tmp_path / "a"), seed=0)
    saved = {cls: cls.reset_parameters for cls in (torch.nn.Linear, torch.nn.LayerNorm)}
    disable_torch_init()
    try:
        make_vision_tower(str(tmp_path / "b"), seed=0)
        assert torch.nn.Linear.reset_parameters is not saved[torch.nn.Linear]  # still disabled outside
    finally:
        for cls, fn in saved.items():
            cls.reset_parameters = fn
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
