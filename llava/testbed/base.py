"""Write the testbed's base LLM: a small LLaMA (random, or trained on text) in the layout of a published base
(like lmsys/vicuna-7b-v1.5: config.json, generation_config.json, pytorch_model.bin, LLaMA tokenizer files).

    python -m llava.testbed.base --out DIR [--hidden 128 --layers 4 --heads 4 --seed 0] [--text-steps N]

Stage 1 of the testbed recipe names this folder as --model_name_or_path, exactly as the real recipe
names Vicuna. The tokenizer is the project's tiny LLaMA-style sentencepiece model (1000 pieces), trained
with the shapes world's own sentences added, so that its words (colours, shapes, numbers) are whole pieces.

With --text-steps N the random LLaMA is then trained N steps on text alone, as Vicuna arrives trained:
conversations in the `v1` template whose questions ask the colour of a shape and whose answers name it,
"What colour is the star?" -> "The star is red." (the colour drawn at random: there is no picture). The only
thing such text teaches is to carry the asked word into the answer, the copying a pretrained LLM brings
and one trained from nothing must otherwise find while a picture offers it short-cuts (README, *A text-trained
base LLM*). What it did goes to DIR/base_training.json, with the share of held-out answers that copy the
asked shape.
"""
import json
import math
import os
import random
import time

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


def text_conversations(n, rng):
    """`n` text-only conversations of 2 to 4 colour questions, each answered by a sentence naming the shape asked
    (upstream's format, no image): the colour is random, the shape is the question's."""
    from llava.testbed.generate import colour_question, colour_sentence
    from llava.testbed.world import COLOURS, SHAPES

    out = []
    for _ in range(n):
        conv = []
        for _ in range(rng.randint(2, 4)):
            shape = rng.choice(SHAPES)
            conv += [{"from": "human", "value": colour_question(shape)},
                     {"from": "gpt", "value": colour_sentence(shape, rng.choice(list(COLOURS)))}]
        out.append(conv)
    return out


def _encode(conversations, tokenizer):
    from llava.conversation import conv_templates
    from llava.train.preprocess import preprocess

    data = preprocess(conversations, tokenizer, conv=conv_templates["v1"])
    return list(zip(data["input_ids"], data["labels"]))


def _batch(items, tokenizer):
    """Right-padded input_ids, labels and attention mask, by the stages' own collator."""
    from llava.train.train import DataCollatorForSupervisedDataset

    batch = DataCollatorForSupervisedDataset(tokenizer)([{"input_ids": x, "labels": y} for x, y in items])
    return batch["input_ids"], batch["labels"], batch["attention_mask"]


@torch.no_grad()
def copy_rate(model, tokenizer, held_out):
    """Share of the held-out sentence answers whose shape (the token after "The") the model predicts greedily."""
    from llava.testbed.world import SHAPES

    shapes = torch.tensor([tokenizer.convert_tokens_to_ids("\u2581" + s) for s in SHAPES])
    the = tokenizer.convert_tokens_to_ids("\u2581The")
    was_training = model.training
    model.eval()
    hits = total = 0
    for k in range(0, len(held_out), 50):
        ids, labels, mask = _batch(held_out[k:k + 50], tokenizer)
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        at = torch.isin(labels[:, 1:], shapes) & (ids[:, :-1] == the)
        total += int(at.sum())
        hits += int((pred[:, :-1][at] == labels[:, 1:][at]).sum())
    model.train(was_training)
    return hits / max(total, 1)


def train_text(model, tokenizer, steps, batch_size, lr, rng):
    """`steps` AdamW steps (linear warm-up over 3%, cosine decay, as the stages' trainer) on text_conversations."""
    train = _encode(text_conversations(steps * batch_size // 2 or 1, rng), tokenizer)
    held_out = _encode(text_conversations(200, rng), tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, round(0.03 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    order, losses = [], []
    model.train()
    for step in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(train)), len(train))
        idx, order = order[:batch_size], order[batch_size:]
        ids, labels, mask = _batch([train[i] for i in idx], tokenizer)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return {"steps": steps, "batch_size": batch_size, "learning_rate": lr, "conversations": len(train),
            "final_loss": round(sum(losses[-25:]) / max(len(losses[-25:]), 1), 4),
            "held_out_copy_rate": round(copy_rate(model, tokenizer, held_out), 4)}


@torch_init()
def write_base(out, hidden=128, layers=4, heads=4, seed=0, text_steps=0, text_batch=32, text_lr=1e-3):
    from transformers import LlamaConfig, LlamaForCausalLM

    from llava.model.builder import load_tokenizer
    from llava.tools.make_tiny_checkpoint import _vocab_size, _write_base, train_tokenizer

    if text_steps < 0 or text_batch < 1 or text_lr <= 0:
        raise ValueError(f"--text-steps {text_steps}, --text-batch {text_batch}, --text-lr {text_lr}: expected "
                         "steps >= 0, a batch of at least 1 and a positive learning rate")
    train_tokenizer(out, world_corpus())
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, vocab_size=_vocab_size(out), pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False, rope_theta=10000.0)
    llm = LlamaForCausalLM(config)
    record = os.path.join(out, "base_training.json")
    if os.path.exists(record):
        os.remove(record)  # a previous base's, in the same folder
    if text_steps:
        tokenizer = load_tokenizer(out)
        tokenizer.pad_token = tokenizer.unk_token  # as train.py sets it for the v1 template
        start = time.time()
        report = train_text(llm, tokenizer, text_steps, text_batch, text_lr, random.Random(seed))
        report["wall_seconds"] = round(time.time() - start, 1)
        with open(record, "w") as f:
            json.dump(report, f, indent=1)
    _write_base(llm, out, out)
    return out


def build_parser():
    p = entry_parser("llava.testbed.base", __doc__)
    p.add_argument("--out", required=True, help="folder to write the base LLM into (config, weights, tokenizer)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (the MLP is 4x as wide)")
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the text")
    p.add_argument("--text-steps", type=int, default=0,
                   help="train the random LLM this many steps on text-only colour conversations (0: leave it random)")
    p.add_argument("--text-batch", type=int, default=32, help="conversations per text step")
    p.add_argument("--text-lr", type=float, default=1e-3, help="peak learning rate of the text steps")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    write_base(args.out, args.hidden, args.layers, args.heads, args.seed, args.text_steps, args.text_batch,
               args.text_lr)
    print(json.dumps({"model_base": args.out}))


if __name__ == "__main__":
    main()
