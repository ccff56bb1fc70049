"""Training prompts and their target masks, defined by what generation must produce (not token-length
arithmetic, not character spans).

For one sample the prompt is rendered as a list of segments `(text, is_target)` whose concatenation is,
checked character for character, what `Conversation.get_prompt()` gives at inference for the same turns.
Target segments are exactly each assistant reply followed by its end-of-turn marker (`</s>` for v1 and
llama_2, `<|im_end|>` for ChatML, `###` for v0, `\\n` for plain). The input ids are the whole prompt
tokenized the way the model sees it at inference (`tokenizer_image_token`). The supervised ids of a reply
are the ids that follow that turn's inference prompt (the turns before it and the open assistant turn,
"... ASSISTANT:") when the reply and its marker are appended: ids(prompt + reply + marker) minus
ids(prompt). So a lone '▁' piece before a reply that starts with a digit is supervised, as generation must
emit it. A conversation for which those ids are not a prefix of the whole prompt's ids (a marker the
tokenizer merges with the next turn) makes the sample's mask underivable: that raises `TargetMaskError`
naming the sample, nothing is dropped or zeroed silently.

Compared with upstream's `preprocess_v1`/`preprocess_llama_2`/`preprocess_mpt` (which count tokens per
round and subtract 1 or 2 depending on tokenizer versions, then mask the whole sample on a mismatch), the
result is the same where upstream is right, and is right where upstream's counts drift (other tokenizers,
legacy flags, special markers split differently).
"""
from typing import Dict, List, Optional, Sequence

import torch

from llava import conversation as conversation_lib
from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from llava.conversation import SeparatorStyle

HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "model")


class TargetMaskError(ValueError):
    """The labels of a sample cannot be derived exactly (the message names the sample)."""


# ---- multimodal text (upstream's preprocess_multimodal) ------------------------------------------
def preprocess_multimodal(sources, data_args):
    """Move `<image>` to the front of the turn that has it (`"<image>\\n" + text`); `mmtag` templates wrap it
    as `<Image><image></Image>`; with `mm_use_im_start_end` it becomes `<im_start><image><im_end>`.
    `sources` is a list of conversations (lists of {"from", "value"}); edited in place and returned."""
    if not getattr(data_args, "is_multimodal", False):
        return sources
    conv = getattr(data_args, "conv", None) or conversation_lib.default_conversation
    for source in sources:
        for sentence in source:
            if DEFAULT_IMAGE_TOKEN in sentence["value"]:
                text = sentence["value"].replace(DEFAULT_IMAGE_TOKEN, "").strip()
                sentence["value"] = (DEFAULT_IMAGE_TOKEN + "\n" + text).strip()
                if "mmtag" in conv.version:
                    sentence["value"] = sentence["value"].replace(DEFAULT_IMAGE_TOKEN,
                                                                  "<Image>" + DEFAULT_IMAGE_TOKEN + "</Image>")
            if getattr(data_args, "mm_use_im_start_end", False):
                sentence["value"] = sentence["value"].replace(
                    DEFAULT_IMAGE_TOKEN, DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
    return sources


# ---- rendering --------------------------------------------------------------------------------------
def normalize_turns(source, sample_id=None):
    """[{"from", "value"}] -> [(0 | 1, text)] alternating user/assistant, starting with the user (a leading
    assistant turn is dropped, as upstream does)."""
    turns = []
    for sentence in source:
        role = str(sentence.get("from", "")).lower()
        if role in HUMAN_ROLES:
            r = 0
        elif role in ASSISTANT_ROLES:
            r = 1
        else:
            raise TargetMaskError(f"sample {sample_id!r}: unknown speaker {sentence.get('from')!r}")
        if not turns and r == 1:
            continue
        if turns and turns[-1][0] == r:
            raise TargetMaskError(f"sample {sample_id!r}: turns must alternate human/gpt")
        turns.append((r, sentence["value"]))
    if not any(r == 1 for r, _ in turns):
        raise TargetMaskError(f"sample {sample_id!r}: no assistant reply to train on")
    return turns


def render_segments(conv, turns, sample_id=None):
    """[(text, is_target)] for a conversation under template `conv` (targets: reply + end-of-turn marker).
    Asserts that the segments join to `conv.get_prompt()` with the same turns (plain: upstream's
    pretraining text `"<image>" + caption + sep`)."""
    style = conv.sep_style
    if style == SeparatorStyle.PLAIN:
        if len(turns) != 2 or DEFAULT_IMAGE_TOKEN not in turns[0][1]:
            raise TargetMaskError(f"sample {sample_id!r}: the plain template takes one <image> turn and one reply")
        # the instruction text is dropped; <im_start>/<im_end> and mmtag wrappers are kept when present
        image = DEFAULT_IMAGE_TOKEN
        for wrapped in (DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN,
                        "<Image>" + DEFAULT_IMAGE_TOKEN + "</Image>"):
            if wrapped in turns[0][1]:
                image = wrapped
                break
        return [(image, False), (turns[1][1] + conv.sep, True)]

    segments = []
    if style == SeparatorStyle.TWO:
        segments.append((conv.system + conv.sep, False))
        for i, (r, msg) in enumerate(turns):
            end = conv.sep if i % 2 == 0 else conv.sep2
            if r == 0:
                segments.append((conv.roles[0] + ": " + msg + end, False))
            else:
                segments += [(conv.roles[1] + ": ", False), (msg + end, True)]
    elif style == SeparatorStyle.SINGLE:
        segments.append((conv.system + conv.sep, False))
        for r, msg in turns:
            if r == 0:
                segments.append((conv.roles[0] + ": " + msg + conv.sep, False))
            else:
                segments += [(conv.roles[1] + ": ", False), (msg + conv.sep, True)]
    elif style == SeparatorStyle.MPT:
        segments.append((conv.system + conv.sep, False))
        for r, msg in turns:
            if r == 0:
                segments.append((conv.roles[0] + msg + conv.sep, False))
            else:
                segments += [(conv.roles[1], False), (msg + conv.sep, True)]
    elif style == SeparatorStyle.LLAMA_2:
        for i, (r, msg) in enumerate(turns):
            if r == 0:
                if i == 0 and conv.system:
                    msg = f"<<SYS>>\n{conv.system}\n<</SYS>>\n\n" + msg
                segments.append((f"{conv.sep}[INST] {msg} [/INST]", False))
            else:
                segments += [(" ", False), (f"{msg} {conv.sep2}", True)]
        # get_prompt() lstrips the character set of sep ("<s>") from the whole prompt
        joined = "".join(t for t, _ in segments)
        drop = len(joined) - len(joined.lstrip(conv.sep))
        while drop > 0:
            text, target = segments[0]
            cut = min(drop, len(text))
            segments[0] = (text[cut:], target)
            drop -= cut
            if not segments[0][0]:
                segments.pop(0)
    else:
        raise TargetMaskError(f"sample {sample_id!r}: unsupported separator style {style}")

    reference = conv.copy()
    reference.messages = []
    for r, msg in turns:
        reference.append_message(conv.roles[r], msg)
    prompt = "".join(t for t, _ in segments)
    if prompt != reference.get_prompt():  # a template this renderer does not know how to split
        raise TargetMaskError(f"sample {sample_id!r}: could not split the {conv.version!r} prompt into turns")
    return segments


# ---- tokenization with targets -------------------------------------------------------------------
def target_spans(segments):
    """(start, end) in the joined prompt of every target segment."""
    spans, pos = [], 0
    for text, is_target in segments:
        if is_target:
            spans.append((pos, pos + len(text)))
        pos += len(text)
    return spans


def generation_prompts(conv, turns, segments, sample_id=None):
    """For each target segment, the prompt that generation starts from at inference: the template's
    get_prompt() over the turns before that reply with the assistant's turn open ("... ASSISTANT:"), which
    is the training prompt up to the reply, less the separator the reply brings ("ASSISTANT: 2" at
    inference is "ASSISTANT:" then the generated " 2"). For `plain` (pretraining) the text before the
    caption, as upstream trains it."""
    prompt = "".join(t for t, _ in segments)
    spans = target_spans(segments)
    if conv.sep_style == SeparatorStyle.PLAIN:
        return [prompt[:start] for start, _ in spans]
    replies = [i for i, (r, _) in enumerate(turns) if r == 1]
    out = []
    for n, ((start, _), i) in enumerate(zip(spans, replies)):
        reference = conv.copy()
        reference.messages = []
        for r, msg in turns[:i]:
            reference.append_message(conv.roles[r], msg)
        reference.append_message(conv.roles[1], None)
        before = reference.get_prompt()
        if not prompt.startswith(before) or len(before) > start or prompt[len(before):start].strip():
            raise TargetMaskError(f"sample {sample_id!r}: reply {n + 1} does not follow its inference prompt in "
                                  f"the {conv.version!r} template")
        out.append(before)
    return out


def tokenize_with_targets(segments, prompts, tokenizer, sample_id=None):
    """segments [(text, is_target)] and the generation prompt of each target (generation_prompts) ->
    (input_ids, labels) as 1-D long tensors.

    input_ids: the joined prompt tokenized as at inference (tokenizer_image_token). labels: IGNORE_INDEX
    except, for each reply, on exactly the ids that generation must produce after that reply's prompt to
    give the reply and its end-of-turn marker, i.e. ids(prompt + reply + marker) minus ids(prompt). That
    includes a lone '▁' piece between "ASSISTANT:" and a reply starting with a digit or punctuation
    (LLaMA's tokenizer has no '▁2'): without it a model never learns to begin such an answer."""
    from llava.mm_utils import tokenizer_image_token

    text = "".join(t for t, _ in segments)
    ids = tokenizer_image_token(text, tokenizer)
    labels = [IGNORE_INDEX] * len(ids)
    for n, (before, (start, end)) in enumerate(zip(prompts, target_spans(segments))):
        prompt_ids = tokenizer_image_token(before, tokenizer)
        upto = tokenizer_image_token(text[:end], tokenizer)
        if upto[: len(prompt_ids)] != prompt_ids or ids[: len(upto)] != upto:
            raise TargetMaskError(
                f"sample {sample_id!r}: a token spans both reply {n + 1} ({text[start:end]!r}) and the text around "
                f"it (the ids up to the reply's end are not a prefix of the conversation's); the target mask "
                f"cannot be derived exactly (is the template's end-of-turn marker a special token of this "
                f"tokenizer?)")
        if len(upto) == len(prompt_ids) and text[start:end].strip():
            raise TargetMaskError(f"sample {sample_id!r}: no token covers the reply {text[start:end]!r}")
        labels[len(prompt_ids): len(upto)] = upto[len(prompt_ids):]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def preprocess(sources: Sequence, tokenizer, has_image: bool = False, conv=None,
               sample_ids: Optional[Sequence] = None) -> Dict[str, List[torch.Tensor]]:
    """Upstream signature: conversations -> {"input_ids": [...], "labels": [...]} (one 1-D tensor each).

    The template is `conv` or `llava.conversation.default_conversation` (which `train()` sets from
    `--version`), dispatched on its separator style: PLAIN (pretraining), TWO (v1 / vicuna_v1 / llava_v1 /
    v1_mmtag), LLAMA_2 (llama_2, llava_llama_2, mistral_instruct), MPT (chatml_direct, mpt), SINGLE (v0,
    llava_v0). `has_image` is accepted for compatibility: `<image>` markers are always tokenized as images.
    """
    conv = conv or conversation_lib.default_conversation
    out = {"input_ids": [], "labels": []}
    for n, source in enumerate(sources):
        sample_id = sample_ids[n] if sample_ids is not None else n
        turns = normalize_turns(source, sample_id)
        segments = render_segments(conv, turns, sample_id)
        prompts = generation_prompts(conv, turns, segments, sample_id)
        ids, labels = tokenize_with_targets(segments, prompts, tokenizer, sample_id)
        out["input_ids"].append(ids)
        out["labels"].append(labels)
    return out

