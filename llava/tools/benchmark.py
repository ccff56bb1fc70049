"""Measure the speed and memory of visual-token pruning methods, stage by stage, on the model's own data path.

    python -m llava.tools.benchmark --random-weights small --methods none,fastervlm,agile --visual-token-num 64,192
    python -m llava.tools.benchmark --model-path liuhaotian/llava-v1.5-7b --device cuda --dtype float16 \\
        --methods none,fastv,pdrop,fastervlm,divprune,vispruner,visionzip,agile --visual-token-num 64,128,192 \\
        --out results.json --markdown results.md --plot results.png

The model is a checkpoint (`--model-path`, loaded with load_pretrained_model) or a random-weights model
with a real architecture's shapes, built in memory from configs (`--random-weights`, nothing
downloaded, no tokenizer): llava-v1.5-7b, llava-v1.5-13b, llava-v1.6-vicuna-7b (anyres, 2x2 grid +
base view for a 672x672 image), `small` (a mid-size shape for CPUs) and `tiny` (tests). Weights are
initialised directly on --device in --dtype (a 7B model is never materialised in float32 on the CPU).
The prompt is --prompt-tokens random text token ids with one IMAGE_TOKEN_INDEX after the first
min(35, P // 2) of them (about where LLaVA's system prompt ends), the image random pixels.

Each run times the model's own public steps, called one after the other as `generate` would:
    tower    encode_visual (CLIP up to the select layer [+ CLS attention row and the signals the method
             reads] + projector, except for pre-projector methods, which project their own tokens)
    prune    reduce_visual (the method before the LLM; LLaVA-1.6: per view + view merging)
    splice   embed_prompt (splice + pad; the image spans for in-LLM methods) -> inputs_embeds
    prefill  one language-model forward over inputs_embeds into an empty DynamicCache (last logits only;
             in-LLM methods cut image tokens inside it)
    decode   --new-tokens - 1 greedy one-token steps on that cache
TTFT = tower + prune + splice + prefill; end to end = TTFT + decode; decode tok/s = B * (new - 1) /
decode time. GPU: CUDA events between stages, synchronised once per run; CPU: time.perf_counter.
Every figure is the median over --repeats runs (after --warmup), with min/max and quartiles in the JSON;
runs are interleaved across configurations by default (--order), so load from other processes spreads
over all methods instead of landing on one.
A check pass per configuration asserts that the staged inputs_embeds equal the model's own
prepare_inputs_labels_for_multimodal, that the in-LLM methods' per-layer token counts are the same, and
that the greedy tokens equal model.generate's.

Memory: one extra untimed pass per configuration. CUDA: max_memory_allocated (peak, and peak minus
what was allocated before the pass). CPU: peak process RSS during the pass minus RSS before it,
sampled every 2 ms from /proc/self/statm (an approximation: the allocator reuses freed pages, so it
can read low; "n/a" where /proc is missing). KV cache: bytes of the actual key/value tensors in the
cache after prefill (and the expected value from the token counts, which must agree).

Analytic prefill FLOPs (multiply-add = 2 FLOPs), decoder layers only (the LM head on the last
position, 2 d V, is the same for every method and left out), for n tokens per sequence and batch B:
    per layer  F(n) = 2 n (2 d^2 + 2 d d_kv + 3 d d_ff) + 2 * 2 n^2 d
                      (q, o: d x d; k, v: d x d_kv with d_kv = kv_heads * head_dim, = d without GQA, so
                      4 d^2 for LLaMA-7B/13B; gated MLP: gate, up, down = 3 d d_ff; QK^T and AV over the
                      full n x n square, causal masking not subtracted)
    total      B * sum over layers of F(n_l): n_l the same in every layer for methods before the LLM; for
               in-decoder methods (fastv, pdrop, sparsevlm, dart) the counts the decoder hook measured
The "ideal" speed-up is FLOPs(none) / FLOPs(method) for the same prompt.

Also reported once per run: the tower with and without the CLS attention row (the same forward, plus
one 1 x 577 attention row per head; the two calls alternate), and `agile` as the model runs it next to
the official computation (agile.agile_official) and the per-token loop (agile_reference_loop) on this
run's real post-projector features and CLS attention, end to end and for the walk alone on the same
geometry, checking that they pick identical indices. (Random weights give near-isotropic features, erank
far above a trained model's ~90, so agile's certificate settles the walk; on clustered features it takes
the exact path.)

Counting (README convention): K visual embeddings per image, per view on LLaVA-1.6 with the per-view
scope, so "LLM tokens" is prompt + K x views; in-decoder methods show "first/last" layer counts (their
first layers run at full length) and their K is over the whole image block, all views together. On a
shared CPU use --threads 1: with more threads than free cores, OpenMP barriers turn contention into 5-50x outliers.
"""
import dataclasses
import json
import os
import platform
import statistics
import sys
import threading
import time

import torch
from tqdm import tqdm

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.compat import output_cache
from llava.pruning import METHODS, OPTIONS, PruningConfig, add_pruning_args, agile_reference_loop, select_visual_tokens
from llava.utils import entry_parser

LLAMA_7B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                intermediate_size=11008, vocab_size=32000)
LLAMA_13B = dict(hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                 intermediate_size=13824, vocab_size=32000)
CLIP_L_336 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
PRESETS = {
    "llava-v1.5-7b": dict(llm=LLAMA_7B, tower=CLIP_L_336, anyres=False),
    "llava-v1.5-13b": dict(llm=LLAMA_13B, tower=CLIP_L_336, anyres=False),
    "llava-v1.6-vicuna-7b": dict(llm=LLAMA_7B, tower=CLIP_L_336, anyres=True),
    # mid-size: ratios mean something on a small CPU; CLIP keeps the real 336 px / patch 14 geometry
    "small": dict(llm=dict(hidden_size=1024, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16,
                           intermediate_size=2816, vocab_size=32000),
                  tower=dict(CLIP_L_336, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                             intermediate_size=2048, projection_dim=256), anyres=False),
    "tiny": dict(llm=dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                          intermediate_size=128, vocab_size=1000),
                 tower=dict(CLIP_L_336, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=128, projection_dim=32), anyres=False),
}
PRESETS["tiny-anyres"] = dict(PRESETS["tiny"], anyres=True)  # the LLaVA-1.6 path at tiny shapes (CPU checks)
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
TOWER_QK_GAIN = 4.0  # as the tiny checkpoints: a peaked CLS attention row gives attention-based methods a signal
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
STAGES = ("tower", "prune", "splice", "prefill", "decode")


# ---- the model ----------------------------------------------------------------------------------------
def random_weights_model(preset, dtype, device, seed=0):
    """LlavaLlamaForCausalLM with `preset`'s shapes and random weights, initialised on `device` in `dtype`."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"--random-weights must be one of {', '.join(PRESETS)}, got {preset!r}")
    spec = PRESETS[preset]
    cfg = LlavaConfig(**spec["llm"], max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      pad_token_id=0, bos_token_id=1, eos_token_id=None,
                      mm_vision_tower=f"random-weights/{preset}-clip", mm_vision_select_layer=-2,
                      mm_vision_select_feature="patch", mm_projector_type="mlp2x_gelu",
                      mm_hidden_size=spec["tower"]["hidden_size"], image_aspect_ratio="pad",
                      mm_patch_merge_type="flat", mm_use_im_start_end=False, mm_use_im_patch_token=False,
                      tokenizer_model_max_length=4096, tokenizer_padding_side="right")
    if spec["anyres"]:
        cfg.image_aspect_ratio, cfg.mm_patch_merge_type = "anyres", "spatial_unpad"
        cfg.image_grid_pinpoints = PINPOINTS
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created (and initialised) in dtype, on device
    try:
        with torch.device(device):
            model = LlavaLlamaForCausalLM(cfg)
            tower_cfg = CLIPVisionConfig(**spec["tower"])
            clip = CLIPVisionModel(tower_cfg)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for layer in getattr(clip, "vision_model", clip).encoder.layers:
            layer.self_attn.q_proj.weight.mul_(TOWER_QK_GAIN)
            layer.self_attn.k_proj.weight.mul_(TOWER_QK_GAIN)
        newline = getattr(model.get_model(), "image_newline", None)
        if newline is not None:
            newline.normal_(0, 1 / spec["llm"]["hidden_size"] ** 0.5)
    tower = model.get_vision_tower()  # built unloaded (delay_load): give it the random CLIP
    tower.vision_tower, tower.is_loaded, tower._cfg_only = clip.requires_grad_(False), True, tower_cfg
    model.generation_config.eos_token_id = None  # random weights: generate exactly --new-tokens
    model.generation_config.pad_token_id = 0
    return model.eval().requires_grad_(False)


def checkpoint_model(path, dtype, device):
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    _, model, _, _ = load_pretrained_model(path, None, get_model_name_from_path(path), device=device.type,
                                           torch_dtype=dtype)
    return model.eval().requires_grad_(False)


def image_views(model):
    """Views per image: 1, or base + grid tiles for anyres (for the image size used)."""
    if getattr(model.config, "image_aspect_ratio", None) != "anyres":
        return 1
    grid_w, grid_h = model._grid(IMAGE_SIZE)
    return 1 + grid_w * grid_h


IMAGE_SIZE = (672, 672)  # (width, height) of the (notional) image for anyres models: a 2x2 grid + base


def make_inputs(model, batch, prompt_tokens, device, seed=0):
    """(input_ids [B, P+1] with one IMAGE_TOKEN_INDEX, pixels, image_sizes) with random ids and pixels."""
    if prompt_tokens < 2:
        raise ValueError(f"--prompt-tokens must be at least 2, got {prompt_tokens}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt_tokens), generator=g)
    ids[:, 0] = 1  # <s>
    pre = min(35, prompt_tokens // 2)
    ids = torch.cat([ids[:, :pre], torch.full((batch, 1), IMAGE_TOKEN_INDEX), ids[:, pre:]], dim=1)
    side = model.get_vision_tower().config.image_size
    views = image_views(model)
    pixels = torch.randn(batch * views, 3, side, side, generator=g).clamp(-2, 2)
    pixels = pixels.to(device=device, dtype=model.dtype)
    if views > 1:
        return ids.to(device), list(pixels.view(batch, views, 3, side, side)), [IMAGE_SIZE] * batch
    return ids.to(device), pixels, None


# ---- the stages: the model's own public steps (llava_arch), timed one by one -----------------------------
def stage_tower(model, pixels):
    """Pixels -> VisualInputs (model.encode_visual). Views of anyres images are encoded in one batch."""
    return model.encode_visual(torch.cat(pixels, dim=0) if isinstance(pixels, list) else pixels)


def stage_prune(model, pixels, visual, image_sizes):
    """-> one [T_i, hidden] block per image (model.reduce_visual), as model.image_embeddings returns them."""
    if isinstance(pixels, list):
        return model.reduce_visual(visual, [p.shape[0] for p in pixels], image_sizes, anyres=True)
    return model.reduce_visual(visual, [1] * pixels.shape[0])


def stage_splice(model, input_ids, blocks):
    """model.embed_prompt: splice, pad, the in-decoder methods' image spans -> (embeds, mask)."""
    mask = torch.ones_like(input_ids, dtype=torch.bool)
    _, _, out_mask, _, inputs_embeds, _ = model.embed_prompt(input_ids, mask, None, blocks)
    return inputs_embeds, out_mask.long()


def stage_prefill(model, inputs_embeds, mask):
    from transformers import DynamicCache

    out = model(inputs_embeds=inputs_embeds, attention_mask=mask, past_key_values=DynamicCache(), use_cache=True,
                logits_to_keep=1)
    return out.logits[:, -1].argmax(-1, keepdim=True), output_cache(out)


def stage_decode(model, token, cache, mask, steps):
    """`steps` greedy one-token steps; returns the generated ids [B, steps + 1] (first token included)."""
    tokens = [token]
    for _ in range(steps):
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
    return torch.cat(tokens, dim=1)


class Clock:
    """Marks between stages: CUDA events on a GPU (read after one synchronise), perf_counter on CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_ms(self):
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def run_once(model, inputs, new_tokens, device, clock=None):
    """One full pass; returns (stage ms dict or None, tokens, cache after prefill, inputs_embeds)."""
    input_ids, pixels, image_sizes = inputs
    clock = clock or Clock(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    clock.mark()
    tower_out = stage_tower(model, pixels)
    clock.mark()
    blocks = stage_prune(model, pixels, tower_out, image_sizes)
    clock.mark()
    embeds, mask = stage_splice(model, input_ids, blocks)
    clock.mark()
    token, cache = stage_prefill(model, embeds, mask)
    clock.mark()
    kv = kv_cache_bytes(cache)  # before decoding appends to it (no device sync: shapes only)
    tokens = stage_decode(model, token, cache, mask, new_tokens - 1)
    clock.mark()
    return dict(zip(STAGES, clock.intervals_ms())), tokens, kv, embeds


def kv_cache_bytes(cache):
    """Bytes held by the key and value tensors of a transformers cache (the actual tensors)."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


# ---- analytic figures ---------------------------------------------------------------------------------
def layer_flops(n, d, d_ff, d_kv=None):
    """Prefill FLOPs of one LLaMA decoder layer over n tokens (one sequence): see the module docstring."""
    d_kv = d if d_kv is None else d_kv
    return 2 * n * (2 * d * d + 2 * d * d_kv + 3 * d * d_ff) + 2 * 2 * n * n * d


def prefill_flops(per_layer, d, d_ff, d_kv=None, batch=1):
    """B * sum over layers of F(n_l): per_layer holds each decoder layer's token count (in-decoder methods
    shorten the later layers)."""
    return batch * sum(layer_flops(n, d, d_ff, d_kv) for n in per_layer)


def llm_shape(config):
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return dict(d=config.hidden_size, d_ff=config.intermediate_size, layers=config.num_hidden_layers,
                heads=heads, kv_heads=kv_heads, head_dim=head_dim, d_kv=kv_heads * head_dim)


def token_counts(model, n_full, visual_full, visual_kept, measured=None):
    """Tokens per decoder layer in the prefill: the counts the decoder hook measured (in-decoder methods),
    else the spliced prompt's length in every layer."""
    if measured is not None:
        return list(measured)
    return [n_full - visual_full + visual_kept] * model.config.num_hidden_layers


def decoder_layer_tokens(model):
    """Per decoder layer, the tokens of the first prompt it ran on in the last prefill (in-decoder methods), or
    None."""
    state = getattr(model, "_decoder_pruning", None)
    if state is None or state.layer_tokens is None:
        return None
    return [int(n[0]) for n in state.layer_tokens]


# ---- statistics and memory ----------------------------------------------------------------------------
def load_average():
    """1-minute load average (None where the OS has none): other work on the machine skews CPU timings."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    q1, q3 = (statistics.quantiles(values, n=4, method="inclusive")[i] for i in (0, 2)) if len(values) > 1 \
        else (values[0], values[0])
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3,
            "n": len(values)}


def trim_heap():
    """Give freed heap pages back to the OS (glibc malloc_trim), so an RSS delta sees new allocations."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssSampler:
    """Peak RSS (bytes) above the RSS at start, sampled every `interval` s from /proc/self/statm."""

    def __init__(self, interval=0.002):
        self.interval, self.peak, self.start = interval, 0, None
        self._stop = threading.Event()
        self.available = os.path.exists("/proc/self/statm")

    @staticmethod
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        if self.available:
            trim_heap()
            self.start = self.peak = self.rss()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.available:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def delta(self):
        return None if not self.available else self.peak - self.start


def measure_memory(model, inputs, new_tokens, device):
    """One untimed pass: {"peak_bytes", "peak_above_start_bytes", "kind"}."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run_once(model, inputs, new_tokens, device)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"kind": "cuda max_memory_allocated", "peak_bytes": peak, "peak_above_start_bytes": peak - before}
    with RssSampler() as sampler:
        run_once(model, inputs, new_tokens, device)
    if not sampler.available:
        return {"kind": "n/a (no /proc/self/statm)", "peak_bytes": None, "peak_above_start_bytes": None}
    return {"kind": "cpu RSS sampled every 2 ms (peak during the pass minus RSS before it)",
            "peak_bytes": sampler.peak, "peak_above_start_bytes": sampler.delta}


def timed(fn, repeats, warmup, device):
    """(last output, list of ms) for fn() after warmup calls."""
    out, times = None, []
    for i in range(warmup + repeats):
        clock = Clock(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        clock.mark()
        out = fn()
        clock.mark()
        if i >= warmup:
            times.append(clock.intervals_ms()[0])
    return out, times


# ---- one configuration --------------------------------------------------------------------------------
def time_configs(model, cfgs, inputs, args, device):
    """Timed runs of every configuration. --order interleaved (default): after each configuration's
    warm-up, repeat r runs every configuration once before repeat r + 1 starts, so a burst of load on a
    shared machine hits all methods alike; --order blocked: all repeats of one configuration together.
    Returns per configuration (list of stage-ms dicts, last (tokens, kv bytes, inputs_embeds, FastV span))."""
    runs, last = [[] for _ in cfgs], [None] * len(cfgs)
    # progress on stderr, on a terminal only (disable=None), and gone once done (the tables follow)
    bar = tqdm(total=len(cfgs) * (args.warmup + args.repeats), desc="timing", unit="run", file=sys.stderr,
               disable=None, leave=False)

    def one(i, keep):
        bar.set_postfix_str(f"{cfgs[i].method} K={cfgs[i].visual_token_num}", refresh=False)
        model.set_pruning(cfgs[i])
        stages, tokens, kv, embeds = run_once(model, inputs, args.new_tokens, device)
        last[i] = (tokens, kv, embeds, decoder_layer_tokens(model))
        if keep:
            runs[i].append(stages)
        bar.update()

    with bar:
        if args.order == "blocked":
            for i in range(len(cfgs)):
                for r in range(args.warmup + args.repeats):
                    one(i, r >= args.warmup)
        else:
            for i in range(len(cfgs)):
                for _ in range(args.warmup):
                    one(i, False)
            for _ in range(args.repeats):
                for i in range(len(cfgs)):
                    one(i, True)
    return runs, last


def bench_config(model, cfg, runs, last, inputs, args, device, shape, reference):
    """All figures for one PruningConfig (method, K) from its timed runs, plus its memory and check passes."""
    model.set_pruning(cfg)
    tokens, kv, embeds, measured = last
    memory = measure_memory(model, inputs, args.new_tokens, device)
    input_ids, pixels, image_sizes = inputs
    batch, visual_full = input_ids.shape[0], reference["visual_full"]
    n_full = reference["n_full"]
    n_spliced = embeds.shape[1]
    visual_kept = n_spliced - (n_full - visual_full)
    per_layer = token_counts(model, n_full, visual_full, visual_kept, measured)
    flops = prefill_flops(per_layer, shape["d"], shape["d_ff"], shape["d_kv"], batch)
    elem = torch.empty((), dtype=model.dtype).element_size()
    kv_expected = sum(2 * batch * shape["kv_heads"] * shape["head_dim"] * n * elem for n in per_layer)
    result = {
        "method": cfg.method, "k": cfg.visual_token_num, "pruning": cfg.to_dict(),
        "visual_tokens_in_llm": per_layer[-1] - (n_full - visual_full), "visual_tokens_full": visual_full,
        "visual_tokens_mean_per_layer": sum(per_layer) / len(per_layer) - (n_full - visual_full),
        "llm_tokens_per_layer": per_layer, "prompt_tokens_total": n_full,
        "kv_cache_bytes": kv, "kv_cache_bytes_expected": kv_expected,
        "prefill_flops": flops, "memory": memory,
        "raw_ms": {s: [r[s] for r in runs] for s in STAGES},
    }
    ttft = [sum(r[s] for s in STAGES[:4]) for r in runs]
    e2e = [sum(r[s] for s in STAGES) for r in runs]
    steps = args.new_tokens - 1
    tok_s = [batch * steps / (r["decode"] / 1e3) if steps and r["decode"] > 0 else None for r in runs]
    result["raw_ms"]["ttft"], result["raw_ms"]["e2e"] = ttft, e2e
    result["stats"] = {name: summarise(values) for name, values in result["raw_ms"].items()}
    result["stats"]["decode_tok_s"] = summarise(tok_s)
    if not args.no_check:
        result["checks"] = check_against_model(model, inputs, args.new_tokens, embeds, tokens, measured)
    return result


def check_against_model(model, inputs, new_tokens, embeds, tokens, measured):
    """The staged path must be the model's path: same inputs_embeds, per-layer token counts and greedy tokens."""
    input_ids, pixels, image_sizes = inputs
    mask = torch.ones_like(input_ids)
    _, _, _, _, ref_embeds, _ = model.prepare_inputs_labels_for_multimodal(input_ids, None, mask, None, None, pixels,
                                                                           image_sizes)
    generated = model.generate(input_ids, images=pixels, image_sizes=image_sizes, attention_mask=mask,
                               do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                               num_beams=1, pad_token_id=0)
    n = min(generated.shape[1], tokens.shape[1])
    return {"embeds_equal_model_path": bool(torch.equal(ref_embeds, embeds)),
            "layer_tokens_equal": decoder_layer_tokens(model) == measured,
            "tokens_equal_generate": bool(torch.equal(generated[:, :n].cpu(), tokens[:, :n].cpu()))}


# ---- run-level extras ---------------------------------------------------------------------------------
def tower_cls_row(model, inputs, args, device):
    """The tower (to the select layer) with and without the CLS attention row, in ms; the two calls
    alternate, so both see the same machine state."""
    pixels = inputs[1]
    flat = torch.cat(pixels, dim=0) if isinstance(pixels, list) else pixels
    tower = model.get_vision_tower()
    plain, with_row = [], []
    for _ in range(args.warmup + 2 * args.repeats):
        plain += timed(lambda: tower(flat), 1, 0, device)[1]
        with_row += timed(lambda: tower(flat, output_attentions=True), 1, 0, device)[1]
    skip = args.warmup
    return {"images": flat.shape[0], "without_cls_row_ms": summarise(plain[skip:]),
            "with_cls_row_ms": summarise(with_row[skip:])}


def agile_vs_loop(model, inputs, ks, args, device):
    """agile (as the model runs it) vs the official computation (its erank, its cosine matrix, its per-token
    loop: agile.agile_official) and vs agile_reference_loop, on this run's projected features and CLS
    attention, end to end; and the vectorised walk alone against the loop's walk on the same geometry."""
    from llava.pruning import agile_from_geometry, agile_reference_from_geometry, effective_rank, token_geometry
    from llava.pruning.agile import agile_official

    pixels = inputs[1]
    flat = torch.cat(pixels, dim=0) if isinstance(pixels, list) else pixels
    features, attention = model.encode_images(flat, output_attentions=True)
    opts = {name: getattr(args, name) for name in METHODS["agile"].option_names}
    dist, erank = token_geometry(features.float())
    attn = attention.float()
    rows = []
    loop_repeats = max(1, min(args.repeats, 3))
    for k in ks:
        if k >= features.shape[1]:
            continue
        fast, t_fast = timed(lambda: select_visual_tokens("agile", features, attention, k, **opts),
                             args.repeats, args.warmup, device)
        slow, t_slow = timed(lambda: agile_reference_loop(features, attention, k, **opts), loop_repeats,
                             min(args.warmup, 1), device)
        official, t_official = timed(lambda: agile_official(features, attention, k, **opts), loop_repeats,
                                     min(args.warmup, 1), device)
        walk, t_walk = timed(lambda: agile_from_geometry(dist, erank, attn, k, **opts).sort(-1).values,
                             args.repeats, args.warmup, device)
        ref, t_ref = timed(lambda: agile_reference_from_geometry(dist, erank, attn, k, **opts), loop_repeats,
                           min(args.warmup, 1), device)
        rows.append({"k": k, "views": features.shape[0], "agile_ms": summarise(t_fast), "loop_ms": summarise(t_slow),
                     "official_ms": summarise(t_official), "walk_ms": summarise(t_walk),
                     "loop_walk_ms": summarise(t_ref),
                     "identical_to_official": bool(torch.equal(fast.cpu(), official.cpu())),
                     "erank": [float(e) for e in effective_rank(features)],
                     "identical": bool(torch.equal(fast.cpu(), slow.cpu()) and torch.equal(walk.cpu(), ref.cpu())
                                       and torch.equal(fast.cpu(), walk.cpu()))})
    return rows


# ---- reporting ----------------------------------------------------------------------------------------
def _ms(stat):
    if stat is None:
        return "n/a"
    return f"{stat['median']:.1f} ({stat['min']:.1f}-{stat['max']:.1f})"


def _load_note(meta):
    load = meta.get("load_average") or {}
    if load.get("start") is None or not meta["device"].startswith("cpu"):
        return ""
    return f"; load average {load['start']:.1f} -> {load['end']:.1f} on {load['cpus']} CPUs"


def _mb(n):
    return "n/a" if n is None else f"{n / 2**20:.1f}"


def markdown(report):
    """The results table (medians, min-max in brackets) and the run-level extras, as Markdown lines."""
    meta = report["meta"]
    cuda = meta["device"].startswith("cuda")
    mem_head = "peak MB" if cuda else "RSS +MB"
    lines = [f"Model: {meta['model']} ({meta['dtype']}, {meta['device']}, {meta['threads']} threads); batch "
             f"{meta['batch_size']}, {meta['prompt_tokens']} text tokens + image, {meta['new_tokens']} new tokens; "
             f"median (min-max) of {meta['repeats']} runs after {meta['warmup']} warm-up"
             + _load_note(meta) + ".", "",
             f"| method | K | LLM tokens | tower ms | prune ms | prefill ms | TTFT ms | decode tok/s | e2e ms | "
             f"{mem_head} | KV MB | TFLOPs | prefill speed-up | ideal speed-up |",
             "|---|---:|---:|---|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        s = r["stats"]
        tok = s["decode_tok_s"]
        tok_cell = "n/a" if tok is None else f"{tok['median']:.1f} ({tok['min']:.1f}-{tok['max']:.1f})"
        mem = r["memory"]["peak_bytes" if cuda else "peak_above_start_bytes"]
        tokens = "/".join(str(n) for n in dict.fromkeys(r["llm_tokens_per_layer"]))
        lines.append(
            f"| {r['method']} | {r['k'] if r['method'] != 'none' else 'all'} | {tokens} | {_ms(s['tower'])} | "
            f"{_ms(s['prune'])} | {_ms(s['prefill'])} | {_ms(s['ttft'])} | {tok_cell} | {_ms(s['e2e'])} | "
            f"{_mb(mem)} | {_mb(r['kv_cache_bytes'])} | {r['prefill_flops'] / 1e12:.4g} | "
            f"{r['prefill_speedup']:.2f}x | {r['ideal_speedup']:.2f}x |")
    for row in report.get("skipped", []):
        lines.append(f"| {row['method']} | {row['k']} | skipped: {row['reason']} |" + " |" * 11)
    t = report.get("tower_cls_row")
    if t:
        a, b = t["without_cls_row_ms"]["median"], t["with_cls_row_ms"]["median"]
        lines += ["", f"Vision tower ({t['images']} image(s)/views, to the select layer): {a:.1f} ms without the "
                      f"CLS attention row, {b:.1f} ms with it ({100 * (b / a - 1):+.1f}%)."]
    if report.get("agile_vs_loop"):
        erank = report["agile_vs_loop"][0]["erank"]
        lines += ["", f"AgilePruner on this run's features (erank {', '.join(f'{e:.1f}' for e in erank)}): "
                      "end to end (official: its erank, its cosine matrix and its per-token loop; the loop: "
                      "agile_reference_loop) and the walk alone on the same geometry.", "",
                  "| K | agile ms | official ms | vs official | agile_reference_loop ms | speed-up | walk ms | "
                  "loop walk ms | walk speed-up | identical |", "|---:|---|---|---:|---|---:|---|---|---:|---|"]
        for row in report["agile_vs_loop"]:
            lines.append(f"| {row['k']} | {_ms(row['agile_ms'])} | {_ms(row['official_ms'])} | "
                         f"{row['official_ms']['median'] / row['agile_ms']['median']:.1f}x | {_ms(row['loop_ms'])} | "
                         f"{row['loop_ms']['median'] / row['agile_ms']['median']:.1f}x | {_ms(row['walk_ms'])} | "
                         f"{_ms(row['loop_walk_ms'])} | {row['loop_walk_ms']['median'] / row['walk_ms']['median']:.1f}x "
                         f"| {row['identical']} |")
    return lines


def plot(report, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot {path}: matplotlib is not installed (pip install matplotlib); no plot written",
              file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    methods = list(dict.fromkeys(r["method"] for r in report["results"] if r["method"] != "none"))
    colours = plt.get_cmap("tab20").colors
    for i, m in enumerate(methods):
        rows = sorted((r for r in report["results"] if r["method"] == m), key=lambda r: r["k"] or 0)
        ks, style = [r["k"] for r in rows], ("o-" if len(rows) > 1 else "o") if i < 10 else ("s--" if len(rows) > 1 else "s")
        colour = colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
        axes[0].plot(ks, [r["prefill_speedup"] for r in rows], style, color=colour, label=m)
        axes[0].plot(ks, [r["ideal_speedup"] for r in rows], ":", color=colour, alpha=0.6)
        axes[1].plot(ks, [r["stats"]["ttft"]["median"] for r in rows], style, color=colour, label=m)
        axes[2].plot(ks, [r["kv_cache_bytes"] / 2**20 for r in rows], style, color=colour, label=m)
    for ax, title in zip(axes, ("prefill speed-up over none (dotted: ideal from FLOPs)", "time to first token ms",
                                "KV cache MB")):
        ax.set_xlabel("K (visual tokens per image)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize="small")
    fig.suptitle(f"{report['meta']['model']} on {report['meta']['device']}")
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.savefig(path, dpi=120)
    return True


# ---- command line -------------------------------------------------------------------------------------
def build_parser():
    parser = entry_parser("llava.tools.benchmark", __doc__, conflict_handler="resolve")
    add_pruning_args(parser)  # the shared options (--fastv-layer, --erank-avg, ...); method and K are lists here
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-path", help="a checkpoint folder (or a hub id already in the HF cache)")
    which.add_argument("--random-weights", choices=list(PRESETS), help="random weights with these shapes")
    parser.add_argument("--methods", "--pruning-method", dest="methods", metavar="METHOD[,METHOD...]",
                        default="none,fastv,fastervlm,divprune,vispruner,visionzip,agile,mix",
                        help="comma-separated pruning methods (none is run once)")
    parser.add_argument("--visual-token-num", dest="visual_token_nums", metavar="K[,K...]", default="64,128,192",
                        help="comma-separated K values (visual embeddings kept per image)")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts per forward, each with its own image")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="text tokens in the prompt (image excluded)")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated (first token included)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None,
                        help="weights and activations (default: float16 on CUDA; on CPU float32, bfloat16 for "
                             "the llava-* shapes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda, cpu, mps, ...")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (figures are medians)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration before the timed ones")
    parser.add_argument("--order", choices=["interleaved", "blocked"], default="interleaved",
                        help="interleaved: each repeat runs every configuration once (fair under varying load)")
    parser.add_argument("--seed", dest="bench_seed", metavar="SEED", type=int, default=0,
                        help="weights (random-weights), prompt ids and pixels (--pruning-seed: the random method)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the per-configuration check against prepare_inputs/generate")
    parser.add_argument("--no-agile-loop", action="store_true", help="skip agile vs agile_reference_loop")
    parser.add_argument("--out", help="write every raw figure as JSON here")
    parser.add_argument("--markdown", help="write the tables as Markdown here")
    parser.add_argument("--plot", help="write the figures as a PNG plot here (needs matplotlib)")
    return parser


def parse_list(text, kind, flag):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: {flag}: expected a comma-separated list, got {text!r}")
    if not values:
        raise SystemExit(f"error: {flag}: empty list")
    return values


def configs(args):
    """PruningConfig per (method, K), with the shared options from the command line."""
    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(PruningConfig)
              if f.name not in ("method", "visual_token_num") and hasattr(args, f.name)}
    methods = parse_list(args.methods, str, "--methods")
    ks = parse_list(args.visual_token_nums, int, "--visual-token-num")
    out = []
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"error: --methods: unknown method {m!r}; choose from {', '.join(sorted(METHODS))}")
        own = {name: v for name, v in shared.items() if name not in OPTIONS or name in METHODS[m].option_names}
        for k in ([None] if METHODS[m].stage == "none" else ks):
            try:
                out.append(PruningConfig(method=m, visual_token_num=k, **own).validate())
            except ValueError as e:
                raise SystemExit(f"error: {e}")
    return out, ks


@torch.no_grad()  # not torch.set_grad_enabled(False): main() is also called in-process (tests)
def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    full_size = bool(args.random_weights and args.random_weights.startswith("llava"))
    if full_size and device.type == "cpu" and args.dtype == "float32":
        raise SystemExit(f"error: --random-weights {args.random_weights} in float32 on the CPU would take 4 bytes "
                         f"per parameter (28-52 GB); use --dtype bfloat16 (the CPU default for these shapes)")
    default = "float16" if device.type == "cuda" else ("bfloat16" if full_size else "float32")
    dtype = DTYPES[args.dtype or default]
    for flag, value, least in (("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0),
                               ("--batch-size", args.batch_size, 1), ("--new-tokens", args.new_tokens, 1)):
        if value < least:
            raise SystemExit(f"error: {flag} must be >= {least}, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfgs, ks = configs(args)

    start = time.perf_counter()
    if args.random_weights:
        model = random_weights_model(args.random_weights, dtype, device, args.bench_seed)
        name = f"random-weights {args.random_weights}"
    else:
        try:
            model = checkpoint_model(args.model_path, dtype, device)
        except (FileNotFoundError, ValueError) as e:  # missing checkpoint / tower: one line, no traceback
            raise SystemExit(f"error: {e}")
        name = args.model_path
    build_s = time.perf_counter() - start
    load_start = load_average()
    if device.type == "cpu" and load_start is not None and load_start > (os.cpu_count() or 1) - 0.5:
        print(f"warning: load average {load_start:.1f} on {os.cpu_count()} CPUs: other processes compete for the "
              f"cores and CPU timings will be noisy"
              + (" (consider --threads 1)" if torch.get_num_threads() > 1 else ""), file=sys.stderr)
    for cfg in cfgs:  # a setting this model cannot take (e.g. --fastv-layer too deep) fails before any timing
        try:
            model.set_pruning(cfg)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
    inputs = make_inputs(model, args.batch_size, args.prompt_tokens, device, args.bench_seed)
    shape = llm_shape(model.config)
    skipped = []
    for cfg in list(cfgs):  # a K this model and prompt cannot give (e.g. pdrop's average on a shallow LLM)
        model.set_pruning(cfg)
        try:
            run_once(model, inputs, 1, device)
        except ValueError as e:
            print(f"skipped {cfg.method} K={cfg.visual_token_num}: {e}", file=sys.stderr)
            skipped.append({"method": cfg.method, "k": cfg.visual_token_num, "reason": str(e)})
            cfgs.remove(cfg)

    # the unpruned token count: what the model's own path splices without pruning
    model.set_pruning(None)
    full_embeds = stage_splice(model, inputs[0], stage_prune(model, inputs[1], stage_tower(model, inputs[1]),
                                                            inputs[2]))[0]
    n_full = full_embeds.shape[1]
    reference = {"n_full": n_full, "visual_full": n_full - args.prompt_tokens}

    meta = {"model": name, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "batch_size": args.batch_size, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
            "repeats": args.repeats, "warmup": args.warmup, "llm": shape,
            "vision_tower": {k: getattr(model.get_vision_tower().config, k) for k in
                             ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                              "image_size", "patch_size")},
            "views_per_image": image_views(model), "model_build_s": build_s,
            "parameters": sum(p.numel() for p in model.parameters()),
            "flops_formula": "B * sum_layers [2 n_l (2 d^2 + 2 d d_kv + 3 d d_ff) + 4 n_l^2 d]; n_l measured per "
                             "layer for in-decoder methods"}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    import transformers

    meta["transformers"] = transformers.__version__
    print(f"{name}: {meta['parameters'] / 1e6:.1f} M parameters, built in {build_s:.1f} s; {n_full} prompt "
          f"tokens unpruned ({reference['visual_full']} visual)", file=sys.stderr)

    t0 = time.perf_counter()
    runs, last = time_configs(model, cfgs, inputs, args, device)
    print(f"  timed {len(cfgs)} configurations x {args.repeats} runs ({args.order}): "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results = []
    passes = "memory" + ("" if args.no_check else " + check")
    for cfg, cfg_runs, cfg_last in tqdm(list(zip(cfgs, runs, last)), desc=passes, unit="config", file=sys.stderr,
                                        disable=None, leave=False):
        t0 = time.perf_counter()
        results.append(bench_config(model, cfg, cfg_runs, cfg_last, inputs, args, device, shape, reference))
        tqdm.write(f"  {cfg.method} K={cfg.visual_token_num}: {passes} pass {time.perf_counter() - t0:.1f} s",
                   file=sys.stderr)
    model.set_pruning(None)
    base = next((r for r in results if r["method"] == "none"), None)
    base_flops = base["prefill_flops"] if base else prefill_flops([n_full] * shape["layers"], shape["d"],
                                                                  shape["d_ff"], shape["d_kv"], args.batch_size)
    for r in results:
        r["ideal_speedup"] = base_flops / r["prefill_flops"]
        r["token_ratio"] = n_full / r["llm_tokens_per_layer"][-1]
        r["prefill_speedup"] = (base["stats"]["prefill"]["median"] / r["stats"]["prefill"]["median"]
                                if base else float("nan"))
    report = {"meta": meta, "results": results, "skipped": skipped,
              "tower_cls_row": tower_cls_row(model, inputs, args, device)}
    if not args.no_agile_loop:
        report["agile_vs_loop"] = agile_vs_loop(model, inputs, ks, args, device)
    meta["load_average"] = {"start": load_start, "end": load_average(), "cpus": os.cpu_count()}

    lines = markdown(report)
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    if args.plot:
        plot(report, args.plot)
    failed = [(r["method"], r["k"], c) for r in results for c, ok in r.get("checks", {}).items() if not ok]
    failed += [("agile", row["k"], "identical") for row in report.get("agile_vs_loop", []) if not row["identical"]]
    failed += [(r["method"], r["k"], "kv_cache_bytes") for r in results
               if r["kv_cache_bytes"] != r["kv_cache_bytes_expected"]]
    if failed:
        print(f"warning: checks failed: {failed}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
