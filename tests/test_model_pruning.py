"""Pruning inside the model: exactly K visual embeddings reach the LLM, K >= N changes nothing."""
import json
import os
import shutil

import pytest
import torch

from llava.mm_utils import process_images
from llava.pruning import PruningConfig, select_visual_tokens

from test_model import load, prompt_ids, sample_image


@pytest.fixture(scope="module")
def v15(tiny_checkpoint):
    tokenizer, model, processor, _ = load(tiny_checkpoint("v1.5"))
    yield tokenizer, model, processor
    model.set_pruning(None)


@pytest.fixture(scope="module")
def v16(tiny_checkpoint):
    tokenizer, model, processor, _ = load(tiny_checkpoint("v1.6"))
    yield tokenizer, model, processor
    model.set_pruning(None)


def logits(model, tokenizer, processor, image):
    with torch.no_grad():
        return model(input_ids=prompt_ids(tokenizer), images=process_images([image], processor, model.config),
                     image_sizes=[image.size]).logits


@pytest.mark.parametrize("method", ["agile", "fastervlm", "divprune", "mix", "vispruner", "fps", "random"])
def test_k_at_least_576_is_bit_identical_to_no_pruning(v15, method):
    tokenizer, model, processor = v15
    image = sample_image()
    model.set_pruning(None)
    ref = logits(model, tokenizer, processor, image)
    model.set_pruning(PruningConfig(method=method, visual_token_num=576))
    assert torch.equal(logits(model, tokenizer, processor, image), ref)


@pytest.mark.parametrize("method", ["agile", "fastervlm", "divprune", "mix", "vispruner"])
def test_exactly_k_embeddings_reach_the_llm_and_they_are_the_selected_ones(v15, method):
    tokenizer, model, processor = v15
    image = sample_image(seed=3)
    pixels = process_images([image], processor, model.config)
    model.set_pruning(PruningConfig(method=method, visual_token_num=64))
    ids = prompt_ids(tokenizer)
    _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels, [image.size])
    assert embeds.shape[1] == ids.shape[1] - 1 + 64
    # the same indices the pure function picks from the tower's features and CLS attention row
    feats, attn = model.get_vision_tower()(pixels, output_attentions=True)
    projected = model.get_model().mm_projector(feats)
    idx = select_visual_tokens(method, projected, attn, 64, **({"states": feats} if method == "vispruner" else {}))[0]
    pos = (ids[0] == -200).nonzero().item()
    torch.testing.assert_close(embeds[0, pos : pos + 64], projected[0, idx], rtol=0, atol=0)
    out = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=3,
                         temperature=None, top_p=None, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 1


def test_batch_of_images_prunes_like_one_at_a_time(v15):
    _, model, processor = v15
    images = [sample_image(seed=i) for i in range(3)]
    pixels = process_images(images, processor, model.config)
    model.set_pruning(PruningConfig(method="agile", visual_token_num=32))
    batch = model.image_embeddings(pixels)
    for i in range(3):
        assert torch.equal(batch[i], model.image_embeddings(pixels[i : i + 1])[0])


def test_pruning_stats_are_recorded(v15):
    _, model, processor = v15
    model.set_pruning(PruningConfig(method="agile", visual_token_num=32, pruning_stats=True))
    model.image_embeddings(process_images([sample_image(), sample_image(seed=1)], processor, model.config))
    records = model.pruning_records
    assert len(records) == 2
    for rec in records:
        assert len(rec["kept_indices"]) == 32 and rec["erank_all"] > rec["erank_kept"] >= 1
        assert 0 < rec["attention_entropy"] <= torch.log(torch.tensor(576.0)).item() + 1e-4
        assert rec["pruning_time_s"] >= 0


def test_anyres_budget_scopes(v16):
    tokenizer, model, processor = v16
    image = sample_image(500, 300)  # base + 2 tiles
    pixels = process_images([image], processor, model.config)
    model.set_pruning(None)
    full = model.image_embeddings(pixels, [image.size])[0]
    model.set_pruning(PruningConfig(method="agile", visual_token_num=576))
    assert torch.equal(model.image_embeddings(pixels, [image.size])[0], full)  # K >= N per view: unchanged
    model.set_pruning(PruningConfig(method="fastervlm", visual_token_num=40, budget_scope="per-view"))
    per_view = model.image_embeddings(pixels, [image.size])[0]
    assert per_view.shape[0] == 40 * 3
    model.set_pruning(PruningConfig(method="fastervlm", visual_token_num=40, budget_scope="global"))
    global_ = model.image_embeddings(pixels, [image.size])[0]
    assert global_.shape[0] == 40
    # global keeps tokens of the merged sequence (base, unpadded tiles, newlines) in its order
    rows = [next(j for j in range(full.shape[0]) if torch.equal(full[j], t)) for t in global_]
    assert rows == sorted(rows)
    out = model.generate(prompt_ids(tokenizer), images=pixels, image_sizes=[image.size], do_sample=False,
                         max_new_tokens=2, temperature=None, top_p=None, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 1


def test_per_view_tiles_are_in_stitched_raster_order(v16):
    _, model, processor = v16
    image = sample_image(500, 300)
    pixels = process_images([image], processor, model.config)
    model.set_pruning(PruningConfig(method="fastervlm", visual_token_num=10))
    feats, attn = model.get_vision_tower()(pixels[0], output_attentions=True)
    projected = model.get_model().mm_projector(feats)
    idx = select_visual_tokens("fastervlm", projected, attn, 10)
    block = model.image_embeddings(pixels, [image.size])[0]
    # stitched map is 24 rows x 48 columns: tile 0 covers columns 0-23, tile 1 columns 24-47
    cells = sorted([(int(i) // 24, int(i) % 24, 1) for i in idx[1]] + [(int(i) // 24, 24 + int(i) % 24, 2) for i in idx[2]])
    expected = [projected[t, (r * 24 + (c % 24))] for r, c, t in cells]
    torch.testing.assert_close(block[10:], torch.stack(expected), rtol=0, atol=0)


def test_pruning_passed_at_load_and_saved_in_config(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("v1.5")
    _, model, _, _ = load(ckpt, pruning=PruningConfig(method="divprune", visual_token_num=16))
    assert model.pruning_config.method == "divprune"
    saved = tmp_path / "llava-pruned"
    shutil.copytree(ckpt["model_path"], saved)
    cfg = json.load(open(saved / "config.json"))
    cfg["pruning"] = PruningConfig(method="agile", visual_token_num=48).to_dict()
    json.dump(cfg, open(saved / "config.json", "w"))
    _, model, _, _ = load({"model_path": str(saved)})
    assert (model.pruning_config.method, model.pruning_config.visual_token_num) == ("agile", 48)
    with pytest.raises(ValueError, match="visual-token-num"):
        load(ckpt, pruning=PruningConfig(method="agile"))
    assert os.path.isdir(saved)


def test_visionzip_feeds_exactly_k_merged_tokens(v15, v16):
    tokenizer, model, processor = v15
    image = sample_image(seed=4)
    pixels = process_images([image], processor, model.config)
    model.set_pruning(None)
    ref = logits(model, tokenizer, processor, image)
    model.set_pruning(PruningConfig(method="visionzip", visual_token_num=576))
    assert torch.equal(logits(model, tokenizer, processor, image), ref)
    model.set_pruning(PruningConfig(method="visionzip", visual_token_num=64, pruning_stats=True))
    block = model.image_embeddings(pixels)[0]
    assert block.shape[0] == 64  # CLS counts toward K
    _, _, signals = model.get_vision_tower().encode(pixels, signals=("cls_state",))
    torch.testing.assert_close(block[0], model.get_model().mm_projector(signals["cls_state"][0]), rtol=1e-5,
                               atol=1e-6)  # CLS
    assert model.pruning_records[-1]["erank_kept"] >= 1
    _, model16, processor16 = v16
    wide = sample_image(500, 300)
    model16.set_pruning(PruningConfig(method="visionzip", visual_token_num=32))
    assert model16.image_embeddings(process_images([wide], processor16, model16.config), [wide.size])[0].shape[0] == 96
    with pytest.raises(ValueError, match="per-view"):  # refused when it is switched on, before any image
        model16.set_pruning(PruningConfig(method="visionzip", visual_token_num=32, budget_scope="global"))


def test_fastv_keeps_the_top_k_of_the_last_tokens_attention(v15):
    """Checked against transformers' own eager attention maps of the unpruned model."""
    from transformers import LlamaForCausalLM

    tokenizer, model, processor = v15
    image = sample_image(seed=6)
    pixels = process_images([image], processor, model.config)
    ids = prompt_ids(tokenizer)
    kw = dict(images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=5, min_new_tokens=5,
              temperature=None, top_p=None, pad_token_id=tokenizer.pad_token_id)
    model.set_pruning(None)
    base = model.generate(ids, **kw)
    model.set_pruning(PruningConfig(method="fastv", visual_token_num=576, fastv_layer=1))
    assert torch.equal(model.generate(ids, **kw), base)  # K >= image tokens: the stock path
    model.set_pruning(PruningConfig(method="fastv", visual_token_num=48, fastv_layer=1, pruning_stats=True))
    lengths = []
    hook = model.get_model().layers[1].register_forward_pre_hook(lambda m, a, kw: lengths.append(a[0].shape[1] if a else kw["hidden_states"].shape[1]), with_kwargs=True)
    try:
        out = model.generate(ids, **kw)
    finally:
        hook.remove()
    assert out.shape == (1, 5)
    start = (ids[0] == -200).nonzero().item()
    t = ids.shape[1] - 1 + 576
    assert lengths[0] == t - 576 + 48 and lengths[1:] == [1, 1, 1, 1]  # pruned prefill, then cached decode
    kept = model.pruning_records[-1]["kept_indices"]
    _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels, [image.size])
    ref = LlamaForCausalLM.from_pretrained(model.config._name_or_path, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        att = ref(inputs_embeds=embeds, output_attentions=True).attentions[0]  # layer fastv_layer - 1
    scores = att[0, :, -1, start : start + 576].mean(0)
    assert kept == sorted(scores.topk(48).indices.tolist())


def test_fastv_bad_settings(v15):
    tokenizer, model, processor = v15
    with pytest.raises(ValueError, match="fastv-layer"):
        model.set_pruning(PruningConfig(method="fastv", visual_token_num=8, fastv_layer=5))
    model.set_pruning(PruningConfig(method="fastv", visual_token_num=8, fastv_layer=1))
    with pytest.raises(ValueError, match="prunes inside the LLM at inference only"):
        image = sample_image()
        ids = prompt_ids(tokenizer)
        model(input_ids=ids, labels=ids.clamp(min=0), images=process_images([image], processor, model.config),
              image_sizes=[image.size])
