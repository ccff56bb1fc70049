"""Training prompts and their target masks, derived from character spans (not token-length arithmetic).

For one sample the prompt is rendered as a list of segments `(text, is_target)` whose concatenation is,
checked character for character, what `Conversation.get_prompt()` gives at inference for the same turns.
Target segments are exactly each assistant reply followed by its end-of-turn marker (`</s>` for v1 and
llama_2, `<|im_end|>` for ChatML, `###` for v0, `\\n` for plain). The whole prompt is then tokenized the way
the model sees it at inference (`tokenizer_image_token`: text chunks between `<image>` markers tokenized
on their own, one IMAGE_TOKEN_INDEX per marker) with the tokenizer's character offsets, and a token is
supervised when its characters fall in a target span. A token that mixes a target character with a
non-whitespace character outside the span (or a reply that no token covers) makes the sample's mask
underivable: that raises `TargetMaskError` naming the sample, nothing is dropped or zeroed silently.

Compared with upstream's `preprocess_v1`/`preprocess_llama_2`/`preprocess_mpt` (which count tokens per
round and subtract 1 or 2 depending on tokenizer versions, then mask the whole sample on a mismatch), the
result is the same where upstream is right, and is right where upstream's counts drift (other tokenizers,
legacy flags, special markers split differently).
"""
from typing import Dict, List, Optional, Sequence

import torch

from llava import conversation as conversation_lib
from llava.constants import (DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IGNORE_INDEX,
                             IMAGE_TOKEN_INDEX)
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
def _chunk_encodings(prompt, tokenizer):
    """tokenizer_image_token's ids for `prompt`, with each token's (start, end) in `prompt` (None for the
    image placeholder)."""
    ids, spans, pos = [], [], 0
    drop_first = False
    for i, chunk in enumerate(prompt.split(DEFAULT_IMAGE_TOKEN)):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
            spans.append(None)
        try:
            enc = tokenizer(chunk, return_offsets_mapping=True)
        except NotImplementedError as e:
            raise TargetMaskError("target masks need a tokenizer with character offsets (a fast tokenizer)") from e
        chunk_ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if i == 0:
            drop_first = bool(chunk_ids) and chunk_ids[0] == tokenizer.bos_token_id
            keep = range(len(chunk_ids))
        else:
            keep = range(1 if drop_first else 0, len(chunk_ids))
        for j in keep:
            ids.append(chunk_ids[j])
            s, e = offsets[j]
            spans.append((pos + s, pos + e))
        pos += len(chunk) + len(DEFAULT_IMAGE_TOKEN)
    return ids, spans


def tokenize_with_targets(segments, tokenizer, sample_id=None):
    """segments [(text, is_target)] -> (input_ids, labels) as 1-D long tensors; labels are IGNORE_INDEX
    except on the tokens of target segments."""
    prompt = "".join(t for t, _ in segments)
    targets, pos = [], 0
    for text, is_target in segments:
        if is_target:
            targets.append((pos, pos + len(text)))
        pos += len(text)
    ids, spans = _chunk_encodings(prompt, tokenizer)
    labels = [IGNORE_INDEX] * len(ids)
    covered = [False] * len(targets)
    for n, span in enumerate(spans):
        if span is None or span[0] >= span[1]:
            continue  # image placeholder, BOS and other zero-width tokens are never targets
        s, e = span
        for t, (ts, te) in enumerate(targets):
            if s < te and e > ts:
                outside = prompt[s:max(s, ts)] + prompt[min(e, te):e]
                if outside.strip():
                    raise TargetMaskError(
                        f"sample {sample_id!r}: token {tokenizer.convert_ids_to_tokens(ids[n])!r} spans both "
                        f"an assistant reply and the text around it ({prompt[s:e]!r}); the target mask cannot be "
                        f"derived exactly (is the template's end-of-turn marker a special token of this tokenizer?)")
                labels[n] = ids[n]
                covered[t] = True
                break
    for t, (ts, te) in enumerate(targets):
        if not covered[t] and prompt[ts:te].strip():
            raise TargetMaskError(f"sample {sample_id!r}: no token covers the reply {prompt[ts:te]!r}")
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
        segments = render_segments(conv, normalize_turns(source, sample_id), sample_id)
        ids, labels = tokenize_with_targets(segments, tokenizer, sample_id)
        out["input_ids"].append(ids)
        out["labels"].append(labels)
    return out

