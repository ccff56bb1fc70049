"""Shared fixtures: tiny checkpoints generated once per session (offline, deterministic)."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """tiny_checkpoint(kind, **opts) -> {"model_path", "model_base", "vision_tower"}, cached per arguments."""
    from llava.tools.make_tiny_checkpoint import make_checkpoint

    root = tmp_path_factory.mktemp("ckpt")
    tower = str(root / "clip-vit-tiny-patch14-336")
    cache = {}

    def make(kind="v1.5", **opts):
        key = (kind, tuple(sorted(opts.items())))
        if key not in cache:
            name = f"llava-{kind}-tiny-{len(cache)}" + ("-lora" if kind == "lora" else "")
            opts.setdefault("vision_tower", None if "hf_cache" in opts else tower)
            cache[key] = make_checkpoint(str(root / name), kind=kind, **opts)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_checkpoint):
    from llava.model.builder import load_tokenizer

    return load_tokenizer(tiny_checkpoint("v1.5")["model_path"])
