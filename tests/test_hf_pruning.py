"""llava.hf_pruning: visual-token pruning switched on in place on transformers' own LlavaForConditionalGeneration.

A tiny LLaVA-1.5-shaped model (CLIP 336/14 -> N = 576 patches, Llama LM) built from transformers' config
classes, offline; input_ids are built by hand (no processor or tokenizer).
"""
import copy

import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from llava.hf_pruning import disable_pruning, enable_pruning, pruning_state
from llava.pruning import PruningConfig, select_visual_tokens

N = 576
K = 64
IMAGE = 1000  # image_token_index (below the vocab size)
PAD, BOS = 0, 1
FILL = 3  # left padding fills with an id that is not the config's pad id, so only attention_mask marks it
TEXT_A = ([5, 6, 7], [8, 9, 10, 11])
TEXT_B = ([12], [13, 14])  # shorter prompt: left-padded in a batch with TEXT_A


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=3, num_attention_heads=4)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=1100, max_position_embeddings=2048,
                       bos_token_id=BOS, eos_token_id=2, pad_token_id=PAD)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE,
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    m = LlavaForConditionalGeneration(config).float().eval()
    yield m
    disable_pruning(m)


@pytest.fixture(autouse=True)
def _unpruned_after(model):
    yield
    disable_pruning(model)


def prompt(text, n_image=N):
    before, after = text
    return [BOS, *before, *[IMAGE] * n_image, *after]


def batch(texts, n_image=N):
    """input_ids and attention_mask, left-padded as the llava-hf processor does."""
    rows = [prompt(t, n_image) for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[FILL] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def pixels(b, seed=0):
    return torch.randn(b, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def greedy(model, ids, mask, pv, n=5):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=n,
                              do_sample=False)


def logits(model, ids, pv, **kw):
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pv, **kw).logits


class LMInputs:
    """Records the inputs_embeds the language model receives at each call."""

    def __init__(self, model):
        self.embeds = []
        self.handle = model.model.language_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.embeds.append(kwargs["inputs_embeds"].detach().clone())

    def remove(self):
        self.handle.remove()


def reference_features_and_attention(model, pv):
    """Post-projector features from get_image_features, and the CLS->patch attention of the select layer from
    an eager-attention copy of the tower run with output_attentions=True (independent of the q/k hooks)."""
    with torch.no_grad():
        feats = torch.stack(list(model.model.get_image_features(pixel_values=pv, return_dict=True).pooler_output))
        tower = copy.deepcopy(model.model.vision_tower)
        tower.set_attn_implementation("eager")
        layers = tower.encoder.layers
        produced = {}
        hooks = [layer.register_forward_hook(lambda m, i, o, j=j: produced.__setitem__(j, o[0] if isinstance(o, tuple)
                                                                                       else o))
                 for j, layer in enumerate(layers)]
        out = tower(pv, output_attentions=True, output_hidden_states=True)
        for h in hooks:
            h.remove()
    # which encoder layer produced hidden_states[vision_feature_layer]: found by value, not by formula
    selected = out.hidden_states[model.config.vision_feature_layer]
    matches = [j for j, h in produced.items() if torch.equal(h, selected)]
    assert len(matches) == 1, matches
    attn = out.attentions[matches[0]][:, :, 0, 1:].float().mean(dim=1)  # [B, N]
    return feats, attn, out.attentions


# ---- (1) exactly K image embeddings reach the language model ------------------------------------------------
@pytest.mark.parametrize("method", ["agile", "fastervlm", "divprune"])
def test_language_model_receives_exactly_k_image_embeddings(model, method):
    ids, mask = batch([TEXT_A])
    pv = pixels(1)
    n_text = ids.shape[1] - N
    enable_pruning(model, PruningConfig(method=method, visual_token_num=K))
    rec = LMInputs(model)
    try:
        out = logits(model, ids, pv, attention_mask=mask)
        greedy(model, ids, mask, pv, n=3)
        with torch.no_grad():
            tup = model(ids, pixel_values=pv, return_dict=False, use_cache=True)  # positional, tuple out
    finally:
        rec.remove()
    assert out.shape[1] == n_text + K
    assert rec.embeds[0].shape[1] == n_text + K  # forward
    assert rec.embeds[1].shape[1] == n_text + K  # generate: prefill
    assert [e.shape[1] for e in rec.embeds[2:]] == [1, 1, n_text + K]  # one token per step (cache), then tup
    assert tup[0].shape[1] == n_text + K
    disable_pruning(model)
    rec = LMInputs(model)
    try:
        logits(model, ids, pv, attention_mask=mask)
    finally:
        rec.remove()
    assert rec.embeds[0].shape[1] == n_text + N


# ---- (2) the kept tokens are select_visual_tokens' on independently computed features and attention --------
@pytest.mark.parametrize("method", ["agile", "fastervlm", "divprune"])
def test_kept_indices_match_independent_selection(model, method):
    ids, mask = batch([TEXT_A, TEXT_B])
    pv = pixels(2, seed=1)
    feats, attn, all_attn = reference_features_and_attention(model, pv)
    expected = select_visual_tokens(method, feats, attn, K)
    enable_pruning(model, PruningConfig(method=method, visual_token_num=K))
    rec = LMInputs(model)
    try:
        logits(model, ids, pv, attention_mask=mask)
    finally:
        rec.remove()
    state = pruning_state(model)
    assert torch.equal(state.last_indices, expected)
    assert bool((state.last_indices.diff(dim=1) > 0).all())  # ascending: raster order
    if method != "divprune":
        torch.testing.assert_close(state.last_attention, attn, rtol=1e-5, atol=1e-7)
    # the embeddings at the image positions are exactly the kept features, in raster order
    embeds = rec.embeds[0]
    short = ids[:, : ids.shape[1] - N + K].clone()
    for b in range(2):
        start = (ids[b] == IMAGE).nonzero()[0].item()
        torch.testing.assert_close(embeds[b, start : start + K], feats[b, expected[b]], rtol=0, atol=0)
        assert embeds[b, start + K :].shape[0] == short.shape[1] - start - K
    if method == "fastervlm":  # the check can fail: another layer's CLS row keeps other tokens
        other = all_attn[-1][:, :, 0, 1:].float().mean(dim=1)
        assert not torch.equal(select_visual_tokens(method, feats, other, K), expected)


def test_attention_hook_picks_the_select_layer_for_other_feature_layers(model):
    ids, _ = batch([TEXT_A])
    pv = pixels(1, seed=2)
    layer_cfg = model.config.vision_feature_layer
    try:
        model.config.vision_feature_layer = -1  # the last layer's output
        feats, attn, _ = reference_features_and_attention(model, pv)
        enable_pruning(model, PruningConfig(method="fastervlm", visual_token_num=K))
        logits(model, ids, pv)
        torch.testing.assert_close(pruning_state(model).last_attention, attn, rtol=1e-5, atol=1e-7)
        assert torch.equal(pruning_state(model).last_indices, select_visual_tokens("fastervlm", feats, attn, K))
    finally:
        model.config.vision_feature_layer = layer_cfg


# ---- (3) greedy generation with the cache == a manual, cache-free reference --------------------------------
@pytest.mark.parametrize("method", ["agile", "fastervlm", "divprune"])
def test_generate_equals_manual_reference(model, method):
    ids, mask = batch([TEXT_A])
    pv = pixels(1, seed=3)
    feats, attn, _ = reference_features_and_attention(model, pv)
    idx = select_visual_tokens(method, feats, attn, K)
    kept = feats[0, idx[0]]
    # reference: the unpruned model on a prompt with K placeholders, whose embeddings are the kept features;
    # greedy by full recomputation (no cache)
    short = torch.tensor([prompt(TEXT_A, K)])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(short)
        embeds[short == IMAGE] = kept
        ref_logits = model(inputs_embeds=embeds).logits
        tokens = []
        for _ in range(5):
            step = model(inputs_embeds=embeds, use_cache=False).logits[:, -1]
            nxt = step.argmax(-1)
            tokens.append(nxt.item())
            embeds = torch.cat([embeds, model.get_input_embeddings()(nxt)[:, None]], dim=1)
    enable_pruning(model, PruningConfig(method=method, visual_token_num=K))
    out = greedy(model, ids, mask, pv)
    assert torch.equal(out[:, : ids.shape[1]], ids)  # the caller's prompt comes back, full length
    assert out[0, ids.shape[1]:].tolist() == tokens
    torch.testing.assert_close(logits(model, ids, pv, attention_mask=mask), ref_logits, rtol=1e-5, atol=1e-5)
    # positional input_ids and labels are shortened too
    labels = ids.masked_fill(ids == IMAGE, -100)
    with torch.no_grad():
        loss = model(ids, pixel_values=pv, labels=labels).loss
        ref_loss = model.__class__.forward(model, inputs_embeds=model.get_input_embeddings()(short).index_put(
            (short == IMAGE).nonzero(as_tuple=True), kept), labels=short.masked_fill(short == IMAGE, -100)).loss
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)


# ---- (4) a batch == one prompt at a time -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["agile", "divprune"])
def test_batch_equals_single(model, method):
    pv = pixels(2, seed=4)
    enable_pruning(model, PruningConfig(method=method, visual_token_num=K))
    ids, mask = batch([TEXT_A, TEXT_B])
    assert mask[1, 0] == 0  # the second row is left-padded
    out = greedy(model, ids, mask, pv)
    batch_idx = pruning_state(model).last_indices.clone()
    for b, text in enumerate([TEXT_A, TEXT_B]):
        one, one_mask = batch([text])
        alone = greedy(model, one, one_mask, pv[b : b + 1])
        assert torch.equal(pruning_state(model).last_indices[0], batch_idx[b])
        assert out[b, ids.shape[1]:].tolist() == alone[0, one.shape[1]:].tolist()
        assert torch.equal(out[b, -alone.shape[1]:], alone[0])


# ---- (5) disable_pruning restores the model exactly ---------------------------------------------------------
def test_disable_restores_bit_identical_logits(model):
    ids, mask = batch([TEXT_A])
    pv = pixels(1, seed=5)
    before = logits(model, ids, pv, attention_mask=mask)
    before_gen = greedy(model, ids, mask, pv)
    enable_pruning(model, PruningConfig(method="agile", visual_token_num=K))
    assert logits(model, ids, pv, attention_mask=mask).shape[1] == ids.shape[1] - N + K
    enable_pruning(model, PruningConfig(method="divprune", visual_token_num=32))  # enabling again replaces
    assert logits(model, ids, pv, attention_mask=mask).shape[1] == ids.shape[1] - N + 32
    disable_pruning(model)
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert pruning_state(model) is None
    assert torch.equal(logits(model, ids, pv, attention_mask=mask), before)
    assert torch.equal(greedy(model, ids, mask, pv), before_gen)
    disable_pruning(model)  # a second call is a no-op


# ---- (6) refused methods, K >= N, "none" --------------------------------------------------------------------
@pytest.mark.parametrize("method, words", [("fastv", "inside the language model"), ("visionzip", "builds new tokens")])
def test_in_llm_and_merging_methods_are_refused(model, method, words):
    with pytest.raises(ValueError, match=words):
        enable_pruning(model, PruningConfig(method=method, visual_token_num=K))
    assert pruning_state(model) is None and "forward" not in model.__dict__


@pytest.mark.parametrize("config", [PruningConfig(method="agile", visual_token_num=N),
                                    PruningConfig(method="fastervlm", visual_token_num=1000),
                                    PruningConfig(method="none")])
def test_k_at_least_n_or_none_changes_nothing(model, config):
    ids, mask = batch([TEXT_A, TEXT_B])
    pv = pixels(2, seed=6)
    before = logits(model, ids, pv, attention_mask=mask)
    before_gen = greedy(model, ids, mask, pv)
    enable_pruning(model, config)
    assert torch.equal(logits(model, ids, pv, attention_mask=mask), before)
    assert torch.equal(greedy(model, ids, mask, pv), before_gen)


def test_unsupported_models_and_configs_are_refused(model):
    from transformers import LlavaNextForConditionalGeneration

    fake_next = object.__new__(LlavaNextForConditionalGeneration)
    with pytest.raises(NotImplementedError, match="LlavaNextForConditionalGeneration"):
        enable_pruning(fake_next, PruningConfig(method="agile", visual_token_num=K))
    with pytest.raises(TypeError, match="LlavaForConditionalGeneration"):
        enable_pruning(torch.nn.Linear(2, 2), PruningConfig(method="agile", visual_token_num=K))
    with pytest.raises(ValueError, match="visual-token-num"):
        enable_pruning(model, PruningConfig(method="agile"))
    strategy = model.config.vision_feature_select_strategy
    try:
        model.config.vision_feature_select_strategy = "full"
        with pytest.raises(NotImplementedError, match="default"):
            enable_pruning(model, PruningConfig(method="agile", visual_token_num=K))
    finally:
        model.config.vision_feature_select_strategy = strategy
