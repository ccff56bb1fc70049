"""Every registered pruning method inside the model (generated LLaVA-1.5/1.6 checkpoints and the testbed):
the visual token count it promises reaches the LLM, generation works, a left-padded batch answers what one
prompt at a time does, and the eval generator and the CLI run with it."""
import pytest
import torch

from llava.mm_utils import process_images, tokenizer_image_token
from llava.pruning import METHODS, PruningConfig

from test_model import prompt_ids, sample_image
from test_model_pruning import v15, v16  # noqa: F401 (the generated LLaVA-1.5/1.6 checkpoints, loaded once)

# the tiny checkpoints' LLM has 2 decoder layers: the in-LLM methods act before layer 1
TINY = {"fastv": {"fastv_layer": 1}, "dart": {"dart_layer": 1}, "pdrop": {"pdrop_layers": (1,)},
        "sparsevlm": {"sparsevlm_layers": (0,)}, "sparsevlm_v2": {"sparsevlm_layers": (0,)}}
K = 64  # in every method's range (sparsevlm's official tables are keyed by 64, 96, 128, 192)
ACTIVE = sorted(m for m in METHODS if m != "none")


def config(method, k=K, **extra):
    options = dict(TINY.get(method, {}))
    if method == "pdrop":  # K is an average over the layers; with one stage at layer 1 of 2: (576 + n1) / 2
        options["pdrop_layers"] = (1,)
    return PruningConfig(method=method, visual_token_num=k, **options, **extra).validate()


def expected_visual_tokens(method):
    """What the LLM's last layer sees of the image at K (the decoder methods' own counting)."""
    if method == "sparsevlm":
        return None  # kept + recycled: the official table's first stage (66) plus the clusters of the dropped
    if method == "sparsevlm_v2":
        return 66  # the official v2 table's first stage for K = 64
    return K


def generate(model, tokenizer, ids, pixels, sizes, mask=None):
    return model.generate(ids, attention_mask=mask, images=pixels, image_sizes=sizes, do_sample=False,
                          max_new_tokens=4, min_new_tokens=4, temperature=None, top_p=None,
                          pad_token_id=tokenizer.pad_token_id)


@pytest.mark.parametrize("method", ACTIVE)
def test_the_promised_visual_tokens_reach_the_llm(v15, method):
    tokenizer, model, processor = v15
    image = sample_image(seed=11)
    pixels = process_images([image], processor, model.config)
    ids = prompt_ids(tokenizer)
    k = 320 if method == "pdrop" else K  # pdrop: average (576 + 64) / 2 = 320 over the 2 layers
    model.set_pruning(config(method, k, pruning_stats=True))
    _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels,
                                                                       [image.size])
    stage = METHODS[method].stage
    if stage == "decoder":
        assert embeds.shape[1] == ids.shape[1] - 1 + 576  # the LLM gets them all; the hook cuts inside
        model.pruning_records.clear()
        out = generate(model, tokenizer, ids, pixels, [image.size])
        assert out.shape == (1, 4)
        record = model.pruning_records[-1]
        last = record["visual_tokens_last_layer"]
        want = expected_visual_tokens(method)
        if method == "pdrop":  # lambda solved so that the average over the 2 layers, (576 + last) / 2, is <= K
            assert 0 < last and (576 + last) / 2 <= k and (576 + last + 8) / 2 > k, record["decoder_layers"]
        elif want is not None:
            assert last == want, record["decoder_layers"]
        else:  # sparsevlm: the first stage of the K=64 table keeps 66, then recycles clusters of the dropped
            assert 66 < last < 576 and len(record["kept_indices"]) == 66
        assert all(0 <= i < 576 for i in record["kept_indices"])
    else:
        assert embeds.shape[1] == ids.shape[1] - 1 + K
        assert generate(model, tokenizer, ids, pixels, [image.size]).shape == (1, 4)


@pytest.mark.parametrize("method", ACTIVE)
def test_a_left_padded_batch_answers_as_one_prompt_at_a_time(v15, method):
    tokenizer, model, processor = v15
    images = [sample_image(seed=21), sample_image(seed=22)]
    pixels = process_images(images, processor, model.config)
    prompts = [prompt_ids(tokenizer, "What is in the image?")[0],
               prompt_ids(tokenizer, "Describe every object in this picture in detail, please.")[0]]
    k = 320 if method == "pdrop" else K
    model.set_pruning(config(method, k))
    alone = [generate(model, tokenizer, p[None], pixels[i:i + 1], [images[i].size])[0] for i, p in enumerate(prompts)]
    width = max(p.shape[0] for p in prompts)
    batch = torch.full((2, width), tokenizer.pad_token_id)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - p.shape[0]:], mask[i, width - p.shape[0]:] = p, 1
    side = model.config.tokenizer_padding_side
    model.config.tokenizer_padding_side = "left"
    try:
        together = generate(model, tokenizer, batch, pixels, [im.size for im in images], mask)
    finally:
        model.config.tokenizer_padding_side = side
    assert [t.tolist() for t in together] == [a.tolist() for a in alone]


@pytest.mark.parametrize("method", ACTIVE)
def test_llava_16_per_view_or_a_clear_error(v16, method):
    tokenizer, model, processor = v16
    wide = sample_image(500, 300, seed=3)
    pixels = process_images([wide], processor, model.config)
    k = 16
    cfg = config(method, 900 if method == "pdrop" else (K if method.startswith("sparsevlm") else k))
    model.set_pruning(cfg)
    views = pixels[0].shape[0]
    ids = prompt_ids(tokenizer)
    stage = METHODS[method].stage
    if stage in ("pre-projector", "post-projector"):
        block = model.image_embeddings(pixels, [wide.size])[0]
        assert block.shape[0] == k * views  # K per view, base view first
    out = generate(model, tokenizer, ids, pixels, [wide.size])
    assert out.shape == (1, 4)


def test_prumerge_decides_its_own_count_without_k(v15):
    tokenizer, model, processor = v15
    image = sample_image(seed=5)
    pixels = process_images([image], processor, model.config)
    model.set_pruning(PruningConfig(method="prumerge_plus"))
    block = model.image_embeddings(pixels)[0]
    assert 1 < block.shape[0] < 576
    assert generate(model, tokenizer, prompt_ids(tokenizer), pixels, [image.size]).shape == (1, 4)


def test_in_llm_methods_refuse_training(v15):
    tokenizer, model, processor = v15
    image = sample_image()
    ids = prompt_ids(tokenizer)
    for method in sorted(m for m in METHODS if METHODS[m].stage == "decoder"):
        model.set_pruning(config(method, 320 if method == "pdrop" else K))
        with pytest.raises(ValueError, match="prunes inside the LLM at inference only"):
            model(input_ids=ids, labels=ids.clamp(min=0), images=process_images([image], processor, model.config),
                  image_sizes=[image.size])


def test_decoder_layer_options_are_checked_against_the_model(v15):
    _, model, _ = v15
    with pytest.raises(ValueError, match=r"--pdrop-layers must be in \[1, 1\] for this model \(2 decoder layers\)"):
        model.set_pruning(PruningConfig(method="pdrop", visual_token_num=300))  # default 2,8,16
    with pytest.raises(ValueError, match=r"--sparsevlm-layers must be in \[0, 0\]"):
        model.set_pruning(PruningConfig(method="sparsevlm", visual_token_num=64))
    with pytest.raises(ValueError, match="both set its token schedule"):
        PruningConfig(method="pdrop", visual_token_num=64, pdrop_ratio=0.5).validate()


# ---- the eval generator and the CLI with every method, on the testbed ---------------------------------------
TESTBED_OPTIONS = {"fastv": ["--fastv-layer", "1"], "dart": ["--dart-layer", "1"],
                   "pdrop": ["--pdrop-layers", "1,2", "--pdrop-ratio", "0.4"],
                   "sparsevlm": ["--sparsevlm-layers", "0,1"], "sparsevlm_v2": ["--sparsevlm-layers", "0,1"]}


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    import json

    from llava.testbed.world import render, sample_scene
    import random

    root = tmp_path_factory.mktemp("methods_eval")
    (root / "images").mkdir()
    rng = random.Random(3)
    rows = []
    for i, regime in enumerate(("simple", "complex")):
        render(sample_scene(rng, regime)).save(root / "images" / f"{i}.png")
        for q in ("How many objects are there in total?", "Is there a red circle in the image?"):
            rows.append({"question_id": len(rows), "image": f"{i}.png", "text": q})
    (root / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("method", ACTIVE)
def test_model_vqa_loader_answers_with_every_method(questions, method, tmp_path):
    import json

    from llava.eval import model_vqa_loader

    k = [] if method == "pdrop" else ["--visual-token-num", "64"]
    answers = tmp_path / "answers.jsonl"
    code = model_vqa_loader.main(["--model-path", "playground/llava-testbed", "--question-file",
                                  str(questions / "q.jsonl"), "--image-folder", str(questions / "images"),
                                  "--answers-file", str(answers), "--device", "cpu", "--batch-size", "2",
                                  "--num-workers", "0", "--max-new-tokens", "4", "--temperature", "0",
                                  "--pruning-method", method, *k, *TESTBED_OPTIONS.get(method, [])])
    assert code in (0, None)
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"].strip() for r in rows)
    settings = json.loads((tmp_path / "answers.jsonl.run.json").read_text())
    assert settings["pruning"]["method"] == method


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pdrop", "dart", "prumerge_plus", "holov", "fopru", "sparsevlm"])
def test_the_cli_chats_with_the_new_methods(questions, method):
    import subprocess
    import sys

    k = [] if method == "pdrop" else ["--visual-token-num", "64"]
    out = subprocess.run([sys.executable, "-m", "llava.serve.cli", "--model-path", "playground/llava-testbed",
                          "--image-file", str(questions / "images" / "0.png"), "--device", "cpu",
                          "--max-new-tokens", "4", "--temperature", "0", "--pruning-method", method, *k,
                          *TESTBED_OPTIONS.get(method, [])],
                         input="How many objects are there in total?\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"pruning {method}" in out.stderr
    assert out.stdout.strip()
