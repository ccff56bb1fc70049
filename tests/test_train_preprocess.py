"""Training prompts and target masks: for every template, the ids are those the model sees at inference and
the supervised tokens are exactly the assistant replies plus their end-of-turn markers."""
import json
import os

import pytest
import torch

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.train.preprocess import TargetMaskError, preprocess, preprocess_multimodal
from llava.train.train import (DataCollatorForSupervisedDataset, LazySupervisedDataset, check_training_pruning,
                               parse_args, split_pruning_args)
from llava.train.llava_trainer import get_modality_length_grouped_indices

CHAT_VERSIONS = ["v1", "vicuna_v1", "llava_v1", "v1_mmtag", "llama_2", "llava_llama_2", "mistral_instruct",
                 "chatml_direct", "mpt", "llava_v0", "v0"]
CHATML_MARKERS = ["<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer_dir):
    """The tiny LLaMA tokenizer, and a copy where ChatML's markers are special tokens (as in the ChatML
    models those templates are for: Yi-34B / Nous-Hermes-2)."""
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    chatml = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    chatml.add_special_tokens({"additional_special_tokens": CHATML_MARKERS})
    return {"llama": plain, "chatml": chatml}


def tokenizer_for(version, tokenizers):
    return tokenizers["chatml"] if conv_templates[version].sep_style == SeparatorStyle.MPT else tokenizers["llama"]


def marker(conv):
    return {SeparatorStyle.TWO: conv.sep2, SeparatorStyle.LLAMA_2: " " + str(conv.sep2),
            SeparatorStyle.MPT: conv.sep, SeparatorStyle.SINGLE: conv.sep, SeparatorStyle.PLAIN: conv.sep}[conv.sep_style]


def sample(multi_turn, image, image_last=False):
    first = "What is shown in this picture?"
    if image:
        first = f"{first}\n<image>" if image_last else f"<image>\n{first}"
    conv = [{"from": "human", "value": first}, {"from": "gpt", "value": "A red bus on a wet street."}]
    if multi_turn:
        conv += [{"from": "human", "value": "And the weather?"}, {"from": "gpt", "value": "It is raining, 12 degrees."},
                 {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "No."}]
    return conv


def supervised_runs(ids, labels):
    runs, cur = [], []
    for i, lab in zip(ids.tolist(), labels.tolist()):
        if lab != IGNORE_INDEX:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def inference_prompt(conv, turns, upto=None):
    """The prompt as the CLI builds it: the template's get_prompt over the turns (the last reply open if
    `upto` is given)."""
    c = conv.copy()
    c.messages = []
    for n, t in enumerate(turns[: upto if upto is not None else len(turns)]):
        c.append_message(c.roles[0] if t["from"] == "human" else c.roles[1], t["value"])
    if upto is not None:
        c.append_message(c.roles[1], None)
    return c.get_prompt()


def run(version, source, tokenizer, image):
    conv = conv_templates[version]
    data_args = type("A", (), {"is_multimodal": True, "conv": conv, "mm_use_im_start_end": False})()
    sources = preprocess_multimodal([json.loads(json.dumps(source))], data_args) if image else [source]
    out = preprocess(sources, tokenizer, has_image=image, conv=conv)
    return sources[0], out["input_ids"][0], out["labels"][0]


@pytest.mark.parametrize("version", CHAT_VERSIONS)
@pytest.mark.parametrize("multi_turn", [False, True])
@pytest.mark.parametrize("image", [False, True])
def test_targets_are_exactly_the_replies(version, multi_turn, image, tokenizers):
    tokenizer = tokenizer_for(version, tokenizers)
    conv = conv_templates[version]
    turns, ids, labels = run(version, sample(multi_turn, image, image_last=multi_turn), tokenizer, image)
    # input ids: the full prompt tokenized as the model sees it at inference
    full = inference_prompt(conv, turns)
    assert ids.tolist() == tokenizer_image_token(full, tokenizer)
    assert (ids == IMAGE_TOKEN_INDEX).sum().item() == (1 if image else 0)
    if image and "mmtag" not in version:
        assert DEFAULT_IMAGE_TOKEN + "\n" in full  # moved to the front of the turn, as the CLI puts it
    # supervised tokens: every reply and its end-of-turn marker, nothing else
    replies = [t["value"] for t in turns if t["from"] == "gpt"]
    runs = supervised_runs(ids, labels)
    assert [tokenizer.decode(r).strip() for r in runs] == [(r + marker(conv)).strip() for r in replies]
    assert runs[0][-1] != IMAGE_TOKEN_INDEX
    # the generation prompt of each turn is a prefix of the training ids, ending where its reply starts
    for k in range(len(replies)):
        prefix = tokenizer_image_token(inference_prompt(conv, turns, upto=2 * k + 1), tokenizer)
        assert ids[: len(prefix)].tolist() == prefix
        assert (labels[: len(prefix)] == IGNORE_INDEX).all() or k > 0
        assert labels[len(prefix)].item() != IGNORE_INDEX


def test_v1_ends_turns_with_eos(tokenizers):
    tokenizer = tokenizers["llama"]
    _, ids, labels = run("v1", sample(True, True), tokenizer, True)
    runs = supervised_runs(ids, labels)
    assert all(r[-1] == tokenizer.eos_token_id for r in runs)
    assert ids[0].item() == tokenizer.bos_token_id and labels[0].item() == IGNORE_INDEX


def test_plain_pretraining_text(tokenizers):
    tokenizer = tokenizers["llama"]
    source = [{"from": "human", "value": "Describe it.\n<image>"}, {"from": "gpt", "value": "A red bus."}]
    turns, ids, labels = run("plain", source, tokenizer, True)
    assert ids.tolist() == tokenizer_image_token("<image>A red bus.\n", tokenizer)  # instruction dropped
    assert ids[:2].tolist() == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert (labels[:2] == IGNORE_INDEX).all() and (labels[2:] != IGNORE_INDEX).all()
    assert [tokenizer.decode(r) for r in supervised_runs(ids, labels)] == ["A red bus.\n"]
    with pytest.raises(TargetMaskError, match="plain"):
        preprocess([sample(False, False)], tokenizer, conv=conv_templates["plain"], sample_ids=["x"])


def test_underivable_masks_raise_naming_the_sample(tokenizers):
    # ChatML markers that the tokenizer merges with the next turn's text: no exact mask, a clear error
    with pytest.raises(TargetMaskError, match="'sample-7'.*spans both"):
        preprocess([sample(True, False)], tokenizers["llama"], conv=conv_templates["chatml_direct"],
                   sample_ids=["sample-7"])
    bad = [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]
    with pytest.raises(TargetMaskError, match="'s1'.*alternate"):
        preprocess([bad], tokenizers["llama"], conv=conv_templates["v1"], sample_ids=["s1"])
    with pytest.raises(TargetMaskError, match="'s2'.*speaker"):
        preprocess([[{"from": "robot", "value": "a"}]], tokenizers["llama"], conv=conv_templates["v1"],
                   sample_ids=["s2"])
    with pytest.raises(TargetMaskError, match="no assistant reply"):
        preprocess([[{"from": "human", "value": "a"}]], tokenizers["llama"], conv=conv_templates["v1"])


def test_leading_assistant_turn_is_dropped(tokenizers):
    source = [{"from": "gpt", "value": "Hello."}] + sample(False, False)
    _, ids, labels = run("v1", source, tokenizers["llama"], False)
    _, ids2, labels2 = run("v1", sample(False, False), tokenizers["llama"], False)
    assert torch.equal(ids, ids2) and torch.equal(labels, labels2)


def test_preprocess_multimodal_wrappers():
    args = type("A", (), {"is_multimodal": True, "conv": conv_templates["v1"], "mm_use_im_start_end": True})()
    out = preprocess_multimodal([[{"from": "human", "value": "Look: <image> now"}]], args)
    assert out[0][0]["value"] == "<im_start><image><im_end>\nLook:  now"
    args = type("A", (), {"is_multimodal": True, "conv": conv_templates["v1_mmtag"], "mm_use_im_start_end": False})()
    out = preprocess_multimodal([[{"from": "human", "value": "Q?\n<image>"}]], args)
    assert out[0][0]["value"] == "<Image><image></Image>\nQ?"


# ---- data set, collator, sampler, arguments -----------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from llava.train.make_tiny_dataset import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.mktemp("data"), num_images=6)


def test_dataset_and_collator(tiny_data, tokenizers, tiny_vision_tower_dir):
    from llava.model.multimodal_encoder.clip_encoder import load_image_processor

    tokenizer = tokenizers["llama"]
    tokenizer.pad_token = tokenizer.unk_token
    args = type("A", (), {})()
    args.image_folder, args.image_aspect_ratio, args.is_multimodal = tiny_data["image_folder"], "pad", True
    args.image_processor, args.conv, args.mm_use_im_start_end = load_image_processor(tiny_vision_tower_dir), \
        conv_templates["v1"], False
    ds = LazySupervisedDataset(tiny_data["finetune"], tokenizer, args)
    assert len(ds) == 10
    signs = [x > 0 for x in ds.modality_lengths]
    assert signs == [True] * 6 + [False] * 4 and all(a > abs(b) for a, b in zip(ds.lengths[:6], ds.modality_lengths))
    items = [ds[0], ds[7]]
    assert items[0]["image"].shape == (3, 336, 336) and items[1]["image"].abs().sum() == 0
    batch = DataCollatorForSupervisedDataset(tokenizer)(items)
    n0, n1 = len(items[0]["input_ids"]), len(items[1]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n1)) and batch["images"].shape == (2, 3, 336, 336)
    assert batch["attention_mask"].sum(1).tolist() == [n0, n1]
    assert (batch["labels"][1, n1:] == IGNORE_INDEX).all()
    tokenizer.model_max_length = 10
    assert DataCollatorForSupervisedDataset(tokenizer)(items)["input_ids"].shape[1] == 10
    tokenizer.model_max_length = 2048


def test_dataset_errors_name_the_sample(tmp_path, tokenizers):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": "broken-1", "conversations": [{"from": "human", "value": "a"},
                                                                     {"from": "human", "value": "b"}]}]))
    args = type("A", (), {"is_multimodal": False, "conv": conv_templates["v1"]})()
    with pytest.raises(TargetMaskError, match="broken-1"):
        LazySupervisedDataset(str(path), tokenizers["llama"], args)[0]


def test_missing_image_or_stray_marker_names_the_sample(tmp_path, tokenizers, tiny_vision_tower_dir):
    from llava.model.multimodal_encoder.clip_encoder import load_image_processor

    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A dog."}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": "no-file", "image": "missing.png", "conversations": turns},
                                {"id": "stray", "conversations": turns}]))
    args = type("A", (), {"is_multimodal": True, "conv": conv_templates["v1"], "image_folder": str(tmp_path),
                          "image_aspect_ratio": "pad", "mm_use_im_start_end": False,
                          "image_processor": load_image_processor(tiny_vision_tower_dir)})()
    ds = LazySupervisedDataset(str(path), tokenizers["llama"], args)
    with pytest.raises(ValueError, match="'no-file'.*missing.png"):
        ds[0]
    with pytest.raises(ValueError, match="'stray'.*<image> markers"):
        ds[1]


def test_modality_grouped_batches_hold_one_modality():
    lengths = [10 + i for i in range(13)] + [-(5 + i) for i in range(7)]
    order = get_modality_length_grouped_indices(lengths, batch_size=2, world_size=2,
                                                generator=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(20))
    megabatches = [order[i:i + 4] for i in range(0, len(order) - 4, 4)]
    for mb in megabatches[:-1]:
        assert len({lengths[i] > 0 for i in mb}) == 1


def test_pruning_flags_in_the_training_parser(tmp_path):
    pruning, rest = split_pruning_args(["--pruning-method", "agile", "--visual_token_num=32", "--output_dir", "x"])
    assert (pruning.method, pruning.visual_token_num) == ("agile", 32) and rest == ["--output_dir", "x"]
    model_args, data_args, training_args, pruning = parse_args(
        ["--model_name_or_path", "m", "--version", "v1", "--output_dir", str(tmp_path), "--pruning-method",
         "divprune", "--visual-token-num", "64", "--mm_projector_lr", "2e-5", "--report_to", "none"])
    assert model_args.version == "v1" and training_args.mm_projector_lr == 2e-5
    assert pruning.method == "divprune" and pruning.visual_token_num == 64
    assert model_args.mm_use_im_patch_token is True and training_args.model_max_length == 512  # upstream defaults
    with pytest.raises(ValueError, match="visual-token-num"):
        split_pruning_args(["--pruning-method", "agile"])
    with pytest.raises(ValueError, match="inference only"):
        check_training_pruning(split_pruning_args(["--pruning-method", "fastv", "--visual-token-num", "8"])[0])


# ---- supervised ids == what generation must produce -----------------------------------------------------
TESTBED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "playground", "llava-testbed")
REPLIES = ["2", "15", "3 circles", "(a) a red circle", "0", "Yes", "Red", "Zyxq.", "Ça va, très bien: 東京 ü."]


def generation_targets(conv, turns, tokenizer):
    """Per reply: the ids generation must emit after that turn's inference prompt (the CLI's prompt, reply
    open) to give the reply and its end-of-turn marker, i.e. the filled prompt's ids past the open one's."""
    out = []
    for k in range(sum(t["from"] == "gpt" for t in turns)):
        before = tokenizer_image_token(inference_prompt(conv, turns, upto=2 * k + 1), tokenizer)
        filled = tokenizer_image_token(inference_prompt(conv, turns[: 2 * k + 2]), tokenizer)
        assert filled[: len(before)] == before
        out.append(filled[len(before):])
    return out


@pytest.fixture(scope="module")
def testbed_tokenizer():
    from llava.model.builder import load_tokenizer

    return load_tokenizer(TESTBED)


@pytest.mark.parametrize("version", CHAT_VERSIONS)
@pytest.mark.parametrize("which", ["llama", "testbed"])
def test_supervised_ids_are_what_generation_must_produce(version, which, tokenizers, testbed_tokenizer):
    conv = conv_templates[version]
    tokenizer = tokenizer_for(version, tokenizers) if which == "llama" else testbed_tokenizer
    if which == "testbed" and conv.sep_style == SeparatorStyle.MPT:
        tokenizer = testbed_tokenizer.__class__.from_pretrained(TESTBED)
        tokenizer.add_special_tokens({"additional_special_tokens": CHATML_MARKERS})
    for image in (False, True):
        for first in REPLIES:  # single turn, and three turns with the other replies after it
            for multi in (False, True):
                source = [{"from": "human", "value": ("<image>\n" if image else "") + "How many are there?"},
                          {"from": "gpt", "value": first}]
                if multi:
                    source += [{"from": "human", "value": "And then?"}, {"from": "gpt", "value": REPLIES[-1]},
                               {"from": "human", "value": "Count again."}, {"from": "gpt", "value": "7"}]
                turns, ids, labels = run(version, source, tokenizer, image)
                assert supervised_runs(ids, labels) == generation_targets(conv, turns, tokenizer), (first, multi)


def test_a_reply_starting_with_a_digit_supervises_the_lone_space_piece(tokenizers, testbed_tokenizer):
    """After "ASSISTANT:", "2" is generated as '▁' then '2' (LLaMA has no '▁2' piece): both are targets."""
    for tokenizer in (tokenizers["llama"], testbed_tokenizer):
        _, ids, labels = run("v1", [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": "2"}],
                             tokenizer, False)
        (reply,) = supervised_runs(ids, labels)
        assert tokenizer.convert_ids_to_tokens(reply) == ["▁", "2", "</s>"]


def test_plain_pretraining_targets_follow_the_image(tokenizers, testbed_tokenizer):
    for tokenizer in (tokenizers["llama"], testbed_tokenizer):
        for caption in REPLIES:
            _, ids, labels = run("plain", [{"from": "human", "value": "<image>\nDescribe."},
                                           {"from": "gpt", "value": caption}], tokenizer, True)
            before = tokenizer_image_token("<image>", tokenizer)
            filled = tokenizer_image_token("<image>" + caption + "\n", tokenizer)
            assert supervised_runs(ids, labels) == [filled[len(before):]]
