"""The LLaVA model on generated checkpoints: every loading branch, the vision tower, splicing against an
independent reference built from plain transformers classes, and cached generation."""
import json
import os
import shutil

import pytest
import torch
from PIL import Image
from transformers import CLIPVisionModel, LlamaForCausalLM

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
from llava.model import LlavaLlamaForCausalLM, LlavaMistralForCausalLM
from llava.model.builder import detect_checkpoint_kind, load_pretrained_model
from llava.model.multimodal_encoder.clip_encoder import VisionTowerNotFoundError


def load(ckpt, load_8bit=False, **kw):
    path = ckpt["model_path"]
    return load_pretrained_model(path, ckpt.get("model_base"), get_model_name_from_path(path), load_8bit, device="cpu", **kw)


def sample_image(w=400, h=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def prompt_ids(tokenizer, question="What is in the image?", mode="vicuna_v1"):
    conv = conv_templates[mode].copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


@pytest.fixture(scope="module")
def v15(tiny_checkpoint):
    ckpt = tiny_checkpoint("v1.5")
    tokenizer, model, processor, context_len = load(ckpt)
    return ckpt, tokenizer, model, processor, context_len


def test_full_checkpoint_loads_with_tower_and_projector(v15):
    ckpt, tokenizer, model, processor, context_len = v15
    assert isinstance(model, LlavaLlamaForCausalLM)
    assert context_len == 2048
    tower = model.get_vision_tower()
    assert tower.is_loaded and tower.num_patches == 576
    assert processor.crop_size["height"] == 336
    # the projector weights are the checkpoint's, not a fresh init
    index = json.load(open(os.path.join(ckpt["model_path"], "pytorch_model.bin.index.json")))
    shard = index["weight_map"]["model.mm_projector.0.weight"]
    saved = torch.load(os.path.join(ckpt["model_path"], shard), weights_only=True)["model.mm_projector.0.weight"]
    assert torch.equal(model.get_model().mm_projector[0].weight, saved.float())


def test_tower_features_and_cls_attention_match_full_eager_clip(v15):
    _, _, model, processor, _ = v15
    tower = model.get_vision_tower()
    pixels = process_images([sample_image(), sample_image(300, 500, 1)], processor, model.config)
    feats, attn = tower(pixels, output_attentions=True)
    assert feats.shape == (2, 576, tower.hidden_size) and attn.shape == (2, 576)
    ref = CLIPVisionModel.from_pretrained(tower.vision_tower_name, attn_implementation="eager")
    with torch.no_grad():
        out = ref(pixels, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(feats, out.hidden_states[-2][:, 1:], rtol=0, atol=1e-5)
    # attention of the layer that produced hidden_states[-2]: CLS query row, mean over heads, CLS dropped
    torch.testing.assert_close(attn, out.attentions[-2][:, :, 0, 1:].mean(1), rtol=0, atol=1e-6)
    assert not torch.allclose(attn, attn.mean(-1, keepdim=True))  # not a uniform row


def test_tower_does_not_run_layers_after_select_layer(v15):
    _, _, model, processor, _ = v15
    layers = model.get_vision_tower()._vision_model().encoder.layers
    calls = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, layer in enumerate(layers)]
    try:
        model.get_vision_tower()(process_images([sample_image()], processor, model.config))
    finally:
        for h in hooks:
            h.remove()
    assert calls == list(range(len(layers) - 1))  # select layer -2: the last layer never runs


def test_logits_match_reference_built_from_plain_transformers(v15):
    """Upstream's splice, rebuilt by hand: text embeds | projector(CLIP layer -2 patches) | text embeds."""
    ckpt, tokenizer, model, processor, _ = v15
    image = sample_image()
    pixels = process_images([image], processor, model.config)
    ids = prompt_ids(tokenizer)
    with torch.no_grad():
        ours = model(input_ids=ids, images=pixels, image_sizes=[image.size]).logits
        llm = LlamaForCausalLM.from_pretrained(ckpt["model_path"], dtype=torch.float32)
        clip = CLIPVisionModel.from_pretrained(model.get_vision_tower().vision_tower_name)
        patches = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        visual = model.get_model().mm_projector(patches)[0]
        pos = (ids[0] == IMAGE_TOKEN_INDEX).nonzero().item()
        embed = llm.get_input_embeddings()
        embeds = torch.cat([embed(ids[0, :pos]), visual, embed(ids[0, pos + 1 :])])[None]
        ref = llm(inputs_embeds=embeds).logits
    assert ours.shape == (1, ids.shape[1] - 1 + 576, model.config.vocab_size)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


def test_greedy_generation_with_cache_equals_without_cache(v15):
    _, tokenizer, model, processor, _ = v15
    image = sample_image()
    pixels = process_images([image], processor, model.config)
    ids = prompt_ids(tokenizer)
    kw = dict(images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=12, min_new_tokens=12,
              temperature=None, top_p=None, pad_token_id=tokenizer.pad_token_id)
    cached = model.generate(ids, use_cache=True, **kw)
    uncached = model.generate(ids, use_cache=False, **kw)
    assert cached.shape == (1, 12)  # only new tokens are returned, as upstream
    assert torch.equal(cached, uncached)
    # and the first token is the argmax of the full forward pass
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels, image_sizes=[image.size]).logits
    assert cached[0, 0].item() == logits[0, -1].argmax().item()


def test_config_labelled_llava_and_llava_llama_both_load(tiny_checkpoint):
    for model_type in ("llava", "llava_llama"):
        ckpt = tiny_checkpoint("v1.5", model_type=model_type)
        _, model, _, _ = load(ckpt)
        assert isinstance(model, LlavaLlamaForCausalLM)


def test_safetensors_layout_loads(tiny_checkpoint):
    _, model, _, _ = load(tiny_checkpoint("v1.5", safetensors=True))
    assert model.get_vision_tower().is_loaded


def test_lora_branch_merges_adapter_and_projector(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("lora")
    assert detect_checkpoint_kind(ckpt["model_path"], "anything", ckpt["model_base"]) == "lora"
    _, model, _, _ = load(ckpt)
    assert isinstance(model, LlavaLlamaForCausalLM)
    assert not any("lora_" in k for k in model.state_dict())  # merged
    saved = torch.load(os.path.join(ckpt["model_path"], "non_lora_trainables.bin"), weights_only=True)
    assert torch.equal(model.get_model().mm_projector[0].weight,
                       saved["base_model.model.model.mm_projector.0.weight"].float())
    base = LlamaForCausalLM.from_pretrained(ckpt["model_base"], dtype=torch.float32)
    assert not torch.equal(model.get_model().layers[0].self_attn.q_proj.weight,
                           base.model.layers[0].self_attn.q_proj.weight)  # the adapter was applied
    # the branch comes from the files, not the folder name
    renamed = tmp_path / "my-finetune"
    shutil.copytree(ckpt["model_path"], renamed)
    _, model2, _, _ = load({"model_path": str(renamed), "model_base": ckpt["model_base"]})
    torch.testing.assert_close(model2.get_model().layers[0].self_attn.q_proj.weight,
                               model.get_model().layers[0].self_attn.q_proj.weight)


def test_projector_only_branch(tiny_checkpoint):
    ckpt = tiny_checkpoint("projector")
    assert detect_checkpoint_kind(ckpt["model_path"], "x", ckpt["model_base"]) == "projector"
    _, model, _, _ = load(ckpt)
    saved = torch.load(os.path.join(ckpt["model_path"], "mm_projector.bin"), weights_only=True)
    assert torch.equal(model.get_model().mm_projector[2].bias, saved["model.mm_projector.2.bias"].float())


def test_projector_and_lora_need_a_base(tiny_checkpoint):
    ckpt = tiny_checkpoint("projector")
    with pytest.raises(ValueError, match="model_base"):
        load({"model_path": ckpt["model_path"]})


@pytest.mark.parametrize("kind", ["v1.6", "v1.6-mistral"])
def test_v16_anyres_unpad_newline(tiny_checkpoint, kind):
    ckpt = tiny_checkpoint(kind)
    tokenizer, model, processor, _ = load(ckpt)
    assert isinstance(model, LlavaMistralForCausalLM if "mistral" in kind else LlavaLlamaForCausalLM)
    image = sample_image(500, 300)
    pixels = process_images([image], processor, model.config)
    assert pixels.ndim == 5
    blocks = model.image_embeddings(pixels, [image.size])
    # base view 576 + stitched tiles after unpadding with one image_newline per row
    from llava.mm_utils import get_anyres_image_grid_shape
    gw, gh = get_anyres_image_grid_shape(image.size, model.config.image_grid_pinpoints, 336)
    assert (gw, gh) == (2, 1)  # 500x300 fits 672x336 best
    # stitched map 24 x 48; the image is less wide (5:3) than the map (2:1), so columns are cropped:
    # width int(500 * 24 / 300) = 40, i.e. 4 padding columns each side
    rows, cols = 24, 40
    assert blocks[0].shape[0] == 576 + rows * (cols + 1)
    newline = model.get_model().image_newline
    assert torch.equal(blocks[0][576 + cols], newline)  # end of the first row
    assert torch.equal(blocks[0][576 + 2 * cols + 1], newline)  # end of the second row
    out = model.generate(prompt_ids(tokenizer, mode="mistral_instruct" if "mistral" in kind else "vicuna_v1"),
                         images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=4,
                         temperature=None, top_p=None, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 1 and 1 <= out.shape[1] <= 4


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        load_pretrained_model(str(tmp_path / "nope"), None, "nope", device="cpu")


def test_missing_vision_tower_says_what_to_download(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("v1.5")
    broken = tmp_path / "llava-broken"
    shutil.copytree(ckpt["model_path"], broken)
    cfg = json.load(open(broken / "config.json"))
    cfg["mm_vision_tower"] = "someorg/clip-that-is-not-here"
    json.dump(cfg, open(broken / "config.json", "w"))
    with pytest.raises(VisionTowerNotFoundError, match="someorg/clip-that-is-not-here.*download"):
        load({"model_path": str(broken)})
    # ... and a local folder passed explicitly fixes it
    _, model, _, _ = load({"model_path": str(broken)}, vision_tower=ckpt["vision_tower"])
    assert model.get_vision_tower().is_loaded


def test_vision_tower_from_hf_cache_by_hub_name(tiny_checkpoint, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    ckpt = tiny_checkpoint("v1.5", hf_cache=str(cache))
    assert json.load(open(os.path.join(ckpt["model_path"], "config.json")))["mm_vision_tower"] == \
        "openai/clip-vit-large-patch14-336"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    _, model, _, _ = load(ckpt)
    assert model.get_vision_tower().is_loaded


def test_left_padded_batch_generates_like_single_prompts(v15):
    """A left-padded batch (config tokenizer_padding_side="left") gives each row's own greedy answer."""
    _, tokenizer, model, processor, _ = v15
    images = [sample_image(), sample_image(200, 300, 5)]
    pixels = process_images(images, processor, model.config)
    prompts = [prompt_ids(tokenizer, "What is in the image?")[0],
               prompt_ids(tokenizer, "Describe the picture in a few words, please, and name the colours.")[0]]
    kw = dict(do_sample=False, max_new_tokens=6, min_new_tokens=6, temperature=None, top_p=None,
              pad_token_id=tokenizer.pad_token_id)
    singles = [model.generate(p[None], images=pixels[i : i + 1], image_sizes=[images[i].size], **kw)[0]
               for i, p in enumerate(prompts)]
    width = max(len(p) for p in prompts)
    ids = torch.full((2, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    model.config.tokenizer_padding_side = "left"
    try:
        batch = model.generate(ids, attention_mask=mask, images=pixels, image_sizes=[im.size for im in images], **kw)
    finally:
        model.config.tokenizer_padding_side = "right"
    assert torch.equal(batch[0], singles[0]) and torch.equal(batch[1], singles[1])


def test_text_only_generation(v15):
    _, tokenizer, model, _, _ = v15
    ids = tokenizer("USER: hello ASSISTANT:", return_tensors="pt").input_ids
    out = model.generate(ids, do_sample=False, max_new_tokens=3, min_new_tokens=3, temperature=None, top_p=None,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        first = model(input_ids=ids).logits[0, -1].argmax().item()
    assert out.shape == (1, 3) and out[0, 0].item() == first


def test_quantised_loading_without_bitsandbytes_is_a_clear_error(tiny_checkpoint):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    with pytest.raises(ValueError, match="bitsandbytes"):
        load(tiny_checkpoint("v1.5"), load_8bit=True)
