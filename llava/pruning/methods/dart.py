"""DART (EMNLP'25, "Stop Looking for Important Tokens... Duplication Matters More"): keep the image tokens
least similar to a few pivot tokens, once, before decoder layer `dart_layer` (default 2).

Pivots: the p_img = 4 image tokens and the p_txt = 4 tokens after the image span (question + template
tail) with the largest L1 norm of layer (dart_layer - 1)'s key vectors (after RoPE, all heads
concatenated), each group in descending norm order.
Duplication: on layer (dart_layer - 1)'s output passed through the LLM's final RMSNorm, the pivots are
visited in the iteration order of a CPython set built from the pivots' absolute sequence positions (image
pivots first, then text pivots, each in descending norm order), as the official code iterates
`list(set(image_indices + query_indices))`; each pivot takes the t tokens of the remaining pool (the image
tokens that are not image pivots and not taken yet) with the lowest cosine similarity to it, ties to the
lower position. Kept = the image pivots + everything taken; text pivots are not kept. No merging.

Counts: the official takes TOKEN_TOPK = M // 8 per pivot (M = --max_num_trunction), so it keeps
4 + 8 * (M // 8) image tokens: M = 64 / 128 / 192 keeps 68 / 132 / 196. Here K = --visual-token-num is the
number of image tokens kept, exactly: M = K - p_img, t = M // (p_img + p_txt), and the remainder
r = M mod (p_img + p_txt) goes one token each to the first r pivots in visiting order. K = 68 / 132 / 196
is therefore the official M = 64 / 128 / 192 bit for bit; K = 64 takes t = 7 with 4 pivots taking 8.
dart_official_budget=true reads K as the official M instead (K = 64 keeps 68), for reproducing tables.
K <= p_img keeps the K image pivots with the largest key norm.
Positions: the official keeps the original positions (gaps), so "renumber" is False.
"""
import torch
import torch.nn.functional as F

from ..registry import Option, register

DART_LAYER = Option("dart_layer", 2, "dart: the decoder layer before which tokens are pruned (the pivots use "
                    "the previous layer's keys and output)", kind=int, low=1, decoder_layer=True)
DART_PIVOT_IMAGE = Option("dart_pivot_image", 4, "dart: image pivot tokens (largest key L1 norm), kept",
                          kind=int, low=1)
DART_PIVOT_TEXT = Option("dart_pivot_text", 4, "dart: text pivot tokens (largest key L1 norm after the image)",
                         kind=int, low=0)
DART_OFFICIAL_BUDGET = Option("dart_official_budget", False, "dart: read --visual-token-num as the official "
                              "--max_num_trunction M and keep p_img + 8 * (M // 8) tokens (64 -> 68) instead of "
                              "exactly K", kind=bool)


# ---- pure rules ------------------------------------------------------------------------------------------
def dart_counts(k, pivot_image=4, pivot_text=4, official=False):
    """(image pivots kept, per-pivot take t, remainder r) for a budget k: kept = p + (p_img + p_txt) * t + r.
    official=True: k is the official M, t = M // (p_img + p_txt), r = 0."""
    pivots = pivot_image + pivot_text
    if official:
        return pivot_image, k // pivots, 0
    if k <= pivot_image:
        return k, 0, 0
    rest = k - pivot_image
    return pivot_image, rest // pivots, rest % pivots


def dart_kept_count(n_image, k, pivot_image=4, pivot_text=4, official=False):
    """Image tokens DART keeps out of n_image (the pool and the pivots bound it)."""
    p_img, take, extra = dart_counts(k, pivot_image, pivot_text, official)
    return min(n_image, p_img + (pivot_image + pivot_text) * take + extra)


def set_order(image_positions, text_positions):
    """The pivots' visiting order of the official code: list(set(image + text)) of Python ints, per row.
    image_positions [B, p_img], text_positions [B, p_txt] absolute positions, each in descending norm
    order -> [B, p_img + p_txt] (one host round trip: the order is CPython's hash-slot order)."""
    both = torch.cat([image_positions, text_positions], dim=1)
    rows = [list(set(row)) for row in both.tolist()]
    return torch.tensor(rows, dtype=torch.long, device=both.device)


def dart_select(image_keys, text_keys, image_states, text_states, k, image_start, text_start, pivot_image=4,
                pivot_text=4, official=False):
    """DART's rule on plain tensors.

    image_keys [B, N, D] / text_keys [B, M, D]: the previous layer's keys of the image tokens and of the
    tokens after the image; image_states [B, N, C] / text_states [B, M, C]: the previous layer's output
    after the final norm, same tokens; image_start / text_start: their absolute sequence positions (they
    set the CPython set order). Returns the kept image indices [B, kept] (into the image span, ascending),
    kept = k (or the official count with official=True).
    """
    b, n, _ = image_keys.shape
    device = image_keys.device
    p_txt = min(pivot_text, text_keys.shape[1])  # fewer text tokens than pivots: fewer pivots
    p_img, take, extra = dart_counts(k, pivot_image, p_txt, official)
    p_img = min(p_img, n)
    norm_img = image_keys.float().abs().sum(dim=-1)
    norm_txt = text_keys.float().abs().sum(dim=-1)
    img_piv = torch.sort(norm_img, dim=-1, descending=True, stable=True).indices[:, :p_img]  # [B, p_img]
    txt_piv = torch.sort(norm_txt, dim=-1, descending=True, stable=True).indices[:, :p_txt]
    kept = torch.zeros(b, n, dtype=torch.bool, device=device)
    kept.scatter_(1, img_piv, True)
    if take or extra:
        order = set_order(img_piv + image_start, txt_piv + text_start)  # absolute positions, visiting order
        states = torch.cat([image_states, text_states], dim=1).float()
        local = torch.where(order >= text_start, order - text_start + n, order - image_start)  # into `states`
        rows = torch.arange(b, device=device)
        pool = ~kept
        image_states = image_states.float()
        for j in range(order.shape[1]):
            t = take + (1 if j < extra else 0)
            if t == 0:
                continue
            pivot = states[rows, local[:, j]]  # [B, C]
            cos = F.cosine_similarity(pivot[:, None, :], image_states, dim=-1)  # [B, N]
            cos = cos.masked_fill(~pool, float("inf"))
            picks = torch.sort(cos, dim=-1, stable=True).indices[:, :t]  # lowest cosine, ties to lower index
            pool.scatter_(1, picks, False)
            kept.scatter_(1, picks, True)
    count = dart_kept_count(n, k, pivot_image, p_txt, official)
    return torch.sort(kept.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :count].sort(-1).values


# ---- decoder adapter -------------------------------------------------------------------------------------
@register("dart", stage="decoder", options=(DART_LAYER, DART_PIVOT_IMAGE, DART_PIVOT_TEXT, DART_OFFICIAL_BUDGET),
          summary="DART: keep the image tokens least similar to key-norm pivots, before layer 2")
def dart(step, k, dart_layer=2, dart_pivot_image=4, dart_pivot_text=4, dart_official_budget=False):
    """Before layer dart_layer. Needs step.layer, step.hidden (layer dart_layer-1's output),
    step.previous_hidden (its input), step.keys(dart_layer - 1, step.previous_hidden) (post-RoPE, [B, T,
    H*d]), step.final_norm, step.image and step.text_after_image. Returns None or {"keep": [B, kept]
    indices into the image span, ascending, "insert": None, "renumber": False}."""
    if step.layer != dart_layer:
        return None
    start, length = step.image
    t_start, t_end = step.text_after_image
    p_txt = min(dart_pivot_text, t_end - t_start)
    if dart_kept_count(length + 1, k, dart_pivot_image, p_txt, dart_official_budget) >= length:
        return None
    keys = step.keys(step.layer - 1, step.previous_hidden)
    states = step.final_norm(step.hidden)
    keep = dart_select(keys[:, start:start + length], keys[:, t_start:t_end], states[:, start:start + length],
                       states[:, t_start:t_end], k, start, t_start, dart_pivot_image, dart_pivot_text,
                       dart_official_budget)
    return {"keep": keep, "insert": None, "renumber": False}
