"""Upstream's entry point (`deepspeed llava/train/train_mem.py ...`): `train()` with flash attention 2 when
the flash-attn package is importable, PyTorch SDPA otherwise."""
import importlib.util

from llava.train.train import train


def attn_implementation():
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


if __name__ == "__main__":
    train(attn_implementation=attn_implementation())
