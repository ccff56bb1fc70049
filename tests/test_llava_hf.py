"""transformers' own LLaVA checkpoints (llava-hf) load through load_pretrained_model, converted on load, and
agree with transformers' own classes on the same weights, pixels and prompt: logits within 1e-4 in float32
and the same greedy tokens, for LLaVA-1.5 and for LLaVA-NeXT with anyres and unpadding. The checkpoints
are generated here with transformers' config classes (no download)."""
import io
import json
import os

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import get_anyres_image_grid_shape

IMAGE_ID = 1000  # llava-hf's <image> placeholder id in these tiny vocabularies
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
PRE, POST = [1, 50, 60, 70], [80, 90, 13]


def tiny_configs(text_type="llama"):
    from transformers import CLIPVisionConfig, LlamaConfig, MistralConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=336, patch_size=14, projection_dim=32)
    text_cls = MistralConfig if text_type == "mistral" else LlamaConfig
    text = text_cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, vocab_size=1064, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return vision, text


def write_llava_hf(path, kind="llava", text_type="llama", seed=0):
    """A tiny llava-hf checkpoint in transformers' own layout, with the project's LLaMA-settings tokenizer."""
    from transformers import (LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
                              LlavaNextForConditionalGeneration)

    from llava.tools.make_tiny_checkpoint import train_tokenizer
    from llava.utils import torch_init

    vision, text = tiny_configs(text_type)
    common = dict(vision_config=vision, text_config=text, image_token_index=IMAGE_ID, vision_feature_layer=-2,
                  vision_feature_select_strategy="default")
    with torch_init():
        torch.manual_seed(seed)
        if kind == "llava":
            model = LlavaForConditionalGeneration(LlavaConfig(**common))
        else:
            model = LlavaNextForConditionalGeneration(LlavaNextConfig(image_grid_pinpoints=PINPOINTS, **common))
            with torch.no_grad():
                model.model.image_newline.normal_()
    model.save_pretrained(path)
    train_tokenizer(str(path))
    return str(path)


@pytest.fixture(scope="module")
def hf_llava(tmp_path_factory):
    return write_llava_hf(tmp_path_factory.mktemp("hf") / "llava-1.5-tiny-hf")


@pytest.fixture(scope="module")
def hf_next(tmp_path_factory):
    return write_llava_hf(tmp_path_factory.mktemp("hf") / "llava-v1.6-tiny-hf", kind="next")


def load_ours(path):
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(path, None, os.path.basename(path), device="cpu")


def load_theirs(path, cls_name):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(path, dtype=torch.float32).eval()


def test_llava_15_agrees_with_transformers(hf_llava):
    theirs = load_theirs(hf_llava, "LlavaForConditionalGeneration")
    _, ours, _, _ = load_ours(hf_llava)
    assert ours.__class__.__name__ == "LlavaLlamaForCausalLM"
    pixels = torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    their_ids = torch.tensor([PRE + [IMAGE_ID] * 576 + POST] * 2)
    our_ids = torch.tensor([PRE + [IMAGE_TOKEN_INDEX] + POST] * 2)
    with torch.no_grad():
        a = theirs(input_ids=their_ids, pixel_values=pixels).logits
        b = ours(input_ids=our_ids, images=pixels).logits
    assert a.shape == b.shape and (a - b).abs().max().item() < 1e-4
    greedy = dict(max_new_tokens=8, do_sample=False)
    g_theirs = theirs.generate(input_ids=their_ids, pixel_values=pixels, **greedy)[:, their_ids.shape[1]:]
    g_ours = ours.generate(our_ids, images=pixels, **greedy)
    assert torch.equal(g_theirs, g_ours)


@pytest.mark.parametrize("size", [(500, 300), (300, 700)])  # (width, height): a wide and a tall picture
def test_llava_next_anyres_unpadded_agrees_with_transformers(hf_next, size):
    theirs = load_theirs(hf_next, "LlavaNextForConditionalGeneration")
    _, ours, _, _ = load_ours(hf_next)
    grid_w, grid_h = get_anyres_image_grid_shape(size, PINPOINTS, 336)
    pixels = torch.randn(1, 1 + grid_w * grid_h, 3, 336, 336, generator=torch.Generator().manual_seed(2))
    sizes_hw = torch.tensor([[size[1], size[0]]])
    with torch.no_grad():
        n_image = theirs.model.get_image_features(pixel_values=pixels, image_sizes=sizes_hw).pooler_output
        n_image = sum(f.shape[0] for f in n_image) if isinstance(n_image, (list, tuple)) else n_image.shape[0]
        assert 576 < n_image < 576 * (1 + grid_w * grid_h)  # base view + tiles, unpadded (+ a newline per row)
        their_ids = torch.tensor([PRE + [IMAGE_ID] * n_image + POST])
        our_ids = torch.tensor([PRE + [IMAGE_TOKEN_INDEX] + POST])
        a = theirs(input_ids=their_ids, pixel_values=pixels, image_sizes=sizes_hw).logits
        b = ours(input_ids=our_ids, images=[pixels[0]], image_sizes=[size]).logits
    assert a.shape == b.shape and (a - b).abs().max().item() < 1e-4
    greedy = dict(max_new_tokens=6, do_sample=False)
    g_theirs = theirs.generate(input_ids=their_ids, pixel_values=pixels, image_sizes=sizes_hw, **greedy)
    g_ours = ours.generate(our_ids, images=[pixels[0]], image_sizes=[size], **greedy)
    assert torch.equal(g_theirs[:, their_ids.shape[1]:], g_ours)


def test_settings_come_from_the_config(hf_llava, hf_next, tmp_path):
    _, ours, processor, _ = load_ours(hf_llava)
    cfg = ours.config
    assert (cfg.mm_vision_select_layer, cfg.mm_vision_select_feature, cfg.image_aspect_ratio) == (-2, "patch", "pad")
    assert cfg.conv_mode == "vicuna_v1" and processor.crop_size["height"] == 336
    _, ours, _, _ = load_ours(hf_next)
    assert ours.config.image_aspect_ratio == "anyres" and ours.config.mm_patch_merge_type == "spatial_unpad"
    assert ours.config.image_grid_pinpoints == PINPOINTS
    mistral = write_llava_hf(tmp_path / "llava-v1.6-mistral-tiny-hf", kind="next", text_type="mistral")
    _, ours, _, _ = load_ours(mistral)
    assert ours.__class__.__name__ == "LlavaMistralForCausalLM" and ours.config.conv_mode == "mistral_instruct"


def test_a_save_writes_the_original_layout_and_reloads_the_same(hf_next, tmp_path):
    tokenizer, ours, _, _ = load_ours(hf_next)
    out = tmp_path / "llava-v1.6-tiny-original"
    ours.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava_llama" and config["mm_vision_tower"] == "clip-vision-tower"
    assert config["unfreeze_mm_vision_tower"] is True and (out / "clip-vision-tower" / "config.json").exists()
    _, again, _, _ = load_ours(str(out))
    pixels = torch.randn(1, 3, 3, 336, 336, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor([PRE + [IMAGE_TOKEN_INDEX] + POST])
    with torch.no_grad():
        a = ours(input_ids=ids, images=[pixels[0]], image_sizes=[(600, 300)]).logits
        b = again(input_ids=ids, images=[pixels[0]], image_sizes=[(600, 300)]).logits
    assert torch.equal(a, b)


def test_pruning_and_the_cli_on_a_llava_hf_checkpoint(hf_llava, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from llava.pruning import PruningConfig
    from llava.serve.cli import cli

    _, ours, _, _ = load_ours(hf_llava)
    ours.set_pruning(PruningConfig(method="agile", visual_token_num=64))
    blocks = ours.image_embeddings(torch.randn(2, 3, 336, 336))
    assert [b.shape[0] for b in blocks] == [64, 64]
    image = tmp_path / "x.png"
    Image.new("RGB", (400, 300), (10, 200, 30)).save(image)
    monkeypatch.setattr("sys.stdin", io.StringIO("What is it?\n"))
    assert cli(["--model-path", hf_llava, "--image-file", str(image), "--device", "cpu", "--max-new-tokens", "3",
                "--pruning-method", "fastervlm", "--visual-token-num", "64"]) == 0
    err = capsys.readouterr().err
    assert "template vicuna_v1 [checkpoint]" in err and "pruning fastervlm K=64" in err


@pytest.mark.parametrize("method", ["agile", "fastervlm", "divprune"])
def test_in_place_transformers_pruning_matches_our_model(hf_llava, method):
    """The same weights two ways: transformers' class with llava.hf_pruning.enable_pruning, and our converted
    model with set_pruning: the same kept indices and the same logits at K=64 (batch of 2)."""
    from llava.hf_pruning import enable_pruning, pruning_state
    from llava.pruning import PruningConfig

    cfg = PruningConfig(method=method, visual_token_num=64)
    theirs = load_theirs(hf_llava, "LlavaForConditionalGeneration")
    enable_pruning(theirs, cfg)
    _, ours, _, _ = load_ours(hf_llava)
    ours.set_pruning(PruningConfig(method=method, visual_token_num=64, pruning_stats=True))
    pixels = torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = theirs(input_ids=torch.tensor([PRE + [IMAGE_ID] * 576 + POST] * 2), pixel_values=pixels).logits
        b = ours(input_ids=torch.tensor([PRE + [IMAGE_TOKEN_INDEX] + POST] * 2), images=pixels).logits
    ours_kept = [r["kept_indices"] for r in ours.pruning_records]
    assert pruning_state(theirs).last_indices.tolist() == ours_kept and len(ours_kept[0]) == 64
    assert a.shape == b.shape == (2, len(PRE) + 64 + len(POST), 1064)
    assert (a - b).abs().max().item() < 1e-4
