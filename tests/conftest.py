"""Shared fixtures: tiny checkpoints generated once per session (offline, deterministic).

Offline switches are set here, before anything imports huggingface_hub: it reads HF_HUB_OFFLINE and
HF_HUB_CACHE once, at import, so setting them later in a test (monkeypatch.setenv) changes nothing. To
load from a particular hub cache inside a test, pass `cache_dir=` (or patch huggingface_hub.constants).
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A folder holding only tokenizer.model, tokenizer_config.json and special_tokens_map.json."""
    from llava.tools.make_tiny_checkpoint import train_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    """AutoTokenizer on the tokenizer-only folder (transformers 5: a LlamaTokenizer; use_fast is ignored)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(tiny_tokenizer_dir, use_fast=False)
    except TypeError:  # a transformers that rejects the keyword
        return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_vision_tower_dir(tmp_path_factory):
    """The tiny CLIP tower (seed 0) that the session's checkpoints point to."""
    from llava.tools.make_tiny_checkpoint import make_vision_tower

    path = tmp_path_factory.mktemp("towers") / "clip-vit-tiny-patch14-336"
    make_vision_tower(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_vision_tower_dir):
    """tiny_checkpoint(kind="v1.5", **opts) -> make_checkpoint's {"model_path", "model_base", "vision_tower"}.

    Cached per (kind, opts) for the session. Folder names contain "llava" (plus "lora" for LoRA and "mistral"
    for v1.6-mistral), so name-based loading picks the right branch. Seed-0 checkpoints share
    `tiny_vision_tower_dir` unless `hf_cache` or `vision_tower` is given.
    """
    from llava.tools.make_tiny_checkpoint import make_checkpoint

    root = tmp_path_factory.mktemp("ckpt")
    cache = {}

    def make(kind="v1.5", **opts):
        key = (kind, tuple(sorted(opts.items())))
        if key not in cache:
            name = f"llava-{kind}-tiny-{len(cache)}" + ("-lora" if kind == "lora" else "")
            if "hf_cache" not in opts and "vision_tower" not in opts and opts.get("seed", 0) == 0:
                opts = dict(opts, vision_tower=tiny_vision_tower_dir)
            cache[key] = make_checkpoint(str(root / name), kind=kind, **opts)
        return dict(cache[key])

    return make


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_checkpoint):
    """Alias of `tiny_checkpoint` (the same cached factory)."""
    return tiny_checkpoint
