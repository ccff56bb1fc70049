"""Write the testbed's base LLM: a small, randomly initialised LLaMA in the layout of a published base
(like lmsys/vicuna-7b-v1.5: config.json, generation_config.json, pytorch_model.bin, LLaMA tokenizer files).

    python -m llava.testbed.base --out DIR [--hidden 128 --layers 4 --heads 4 --seed 0]

Stage 1 of the testbed recipe names this folder as --model_name_or_path, exactly as the real recipe
names Vicuna. The tokenizer is the project's tiny LLaMA-style sentencepiece model (1000 pieces), trained
with the shapes world's own sentences added, so that its words (colours, shapes, numbers) are whole pieces.
"""
import json

import torch

from llava.utils import entry_parser, torch_init


def world_corpus(n=400, seed=0):
    """Sentences of the shapes world (captions, questions, answers) for the tokenizer."""
    import random

    from llava.testbed.generate import training_conversation
    from llava.testbed.world import caption, sample_scene

    rng = random.Random(seed)
    lines = []
    for i in range(n):
        scene = sample_scene(rng, ("simple", "complex")[i % 2])
        lines.append(caption(scene))
        lines += [t["value"].replace("<image>", "").strip() for t in training_conversation(scene, rng)]
    return [part for line in lines for part in line.split("\n") if part]


@torch_init()
def write_base(out, hidden=128, layers=4, heads=4, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from llava.tools.make_tiny_checkpoint import _vocab_size, _write_base, train_tokenizer

    train_tokenizer(out, world_corpus())
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, vocab_size=_vocab_size(out), pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False, rope_theta=10000.0)
    _write_base(LlamaForCausalLM(config), out, out)
    return out


def build_parser():
    p = entry_parser("llava.testbed.base", __doc__)
    p.add_argument("--out", required=True, help="folder to write the base LLM into (config, weights, tokenizer)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (the MLP is 4x as wide)")
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    write_base(args.out, args.hidden, args.layers, args.heads, args.seed)
    print(json.dumps({"model_base": args.out}))


if __name__ == "__main__":
    main()
