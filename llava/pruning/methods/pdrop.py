"""PDrop (PyramidDrop, CVPR'25): drop image tokens in stages inside the decoder, each stage keeping the ones
the last instruction token attends to most.

Where: before each layer l of `pdrop_layers` (default 2,8,16), i.e. on the output of layer l-1.
Signal: the last prompt token's attention over the image span, computed with layer l's own input norm, q/k
projections and RoPE on layer l-1's output (the *next* stage's first layer), softmax in float32, mean over
heads (`step.attention(l, step.hidden, "last")`).
Counts: stage s (s = 1, 2, ...) keeps int(N * lambda**s) tokens, N = the image's original token count (ratios
are relative to N, not to the current count; int() truncates as the official code does). The shipped
official schedule is layers 8,16,24 with lambda 0.5: 576 / 288 / 144 / 72 tokens, a 32-layer average of 270.
Budget K = the average number of visual tokens per decoder layer over all layers (the paper's "average
tokens", PyramidDrop issue #22): (l1*N + (l2-l1)*n1 + (l3-l2)*n2 + (L-l3)*n3) / L.
pdrop_ratio unset: lambda is solved from K as the largest multiple of 0.01 whose average is <= K (every stage
keeping at least one token); with layers 2,8,16 and N = 576, L = 32 that is 0.19 for K = 64 (the maintainer's
example in issue #29, average 62.9), 0.42 for 128 (127.4) and 0.56 for 192 (191.9).
Positions: the official code renumbers position ids contiguously after every stage, so the adapter asks the
hook to renumber ("renumber": True).
"""

from ..geometry import attention_order
from ..registry import Option, register

PDROP_LAYERS = Option("pdrop_layers", (2, 8, 16), "pdrop: the layers before which a stage drops tokens "
                      "(comma-separated, increasing; the official scripts use 8,16,24)", kind="ints", low=1, decoder_layer=True)
PDROP_RATIO = Option("pdrop_ratio", None, "pdrop: lambda, stage s keeps int(N * lambda**s) of the N image "
                     "tokens (official scripts: 0.5); unset = solved from --visual-token-num K so that the "
                     "average visual tokens per decoder layer is <= K (0.19 / 0.42 / 0.56 for 64 / 128 / 192)",
                     low=0.0, high=1.0, low_open=True, nullable=True)


# ---- pure rules ------------------------------------------------------------------------------------------
def pdrop_select(attention, keep):
    """attention [B, n] (the last token's head-averaged attention over the current image tokens) -> the
    `keep` highest, ties to the lower index, ascending (raster order kept): [B, keep]."""
    return attention_order(attention)[:, :keep].sort(dim=-1).values


def pdrop_counts(n_image, ratio, stages):
    """Image tokens kept by stages 1..stages: [int(n_image * ratio**s)], Python floats as the official
    int(N * ratio_list[s]) with ratio_list = [ratio, ratio**2, ...]."""
    return [int(n_image * ratio ** s) for s in range(1, stages + 1)]


def pdrop_average(n_image, layers, counts, num_layers):
    """Average visual tokens per decoder layer: layers before layers[0] see n_image, layers[s]..layers[s+1]-1
    see counts[s]."""
    bounds = list(layers) + [num_layers]
    total = layers[0] * n_image + sum(c * (bounds[s + 1] - bounds[s]) for s, c in enumerate(counts))
    return total / num_layers


def pdrop_solve_ratio(k, n_image, layers, num_layers):
    """lambda for a budget K: the largest multiple of 0.01 in (0, 1] whose average (pdrop_average) is <= K
    and whose every stage keeps at least one token. A ValueError names the smallest reachable K."""
    best, lowest = None, None
    for j in range(1, 101):
        lam = j / 100
        counts = pdrop_counts(n_image, lam, len(layers))
        if min(counts) < 1:
            continue
        avg = pdrop_average(n_image, layers, counts, num_layers)
        lowest = avg if lowest is None else min(lowest, avg)
        if avg <= k:
            best = lam
    if best is None:
        low = "no lambda keeps a token in every stage" if lowest is None else \
            f"the smallest reachable average is {lowest:.1f}"
        raise ValueError(f"pdrop: no lambda gives an average of at most {k} visual tokens per layer with "
                         f"--pdrop-layers {','.join(map(str, layers))} and {n_image} image tokens ({low}); "
                         "use earlier layers or a larger --visual-token-num")
    return best


def check_pdrop(options):
    layers = options["pdrop_layers"]
    if list(layers) != sorted(set(layers)):
        raise ValueError(f"--pdrop-layers must be strictly increasing, got {','.join(map(str, layers))}")


# ---- decoder adapter -------------------------------------------------------------------------------------
@register("pdrop", stage="decoder", options=(PDROP_LAYERS, PDROP_RATIO), check=check_pdrop,
          k_optional=lambda options: options["pdrop_ratio"] is not None,
          summary="PDrop: multi-stage drop by the last instruction token's attention (lambda, lambda^2, ...)")
def pdrop(step, k, pdrop_layers=(2, 8, 16), pdrop_ratio=None):
    """Before layer l in pdrop_layers: keep the image tokens the last prompt token attends to most with layer
    l's attention on layer l-1's output. Needs step.layer, step.hidden, step.image, step.embeds (its length
    gives the original image count N: only image tokens are ever removed), step.num_layers and
    step.attention. Returns None or {"keep": [B, n_s] indices into the current image span, ascending,
    "insert": None, "renumber": True}."""
    layers = tuple(pdrop_layers)
    if step.layer not in layers:
        return None
    num_layers = step.num_layers
    if layers[-1] >= num_layers:
        raise ValueError(f"--pdrop-layers must be below the number of decoder layers ({num_layers}), "
                         f"got {','.join(map(str, layers))}")
    start, length = step.image
    n_image = length + step.embeds.shape[1] - step.hidden.shape[1]  # the original image count
    if pdrop_ratio is None:
        if k is None:
            raise ValueError("pdrop needs --visual-token-num K (average visual tokens per layer) or --pdrop-ratio")
        if k >= n_image:
            return None
        ratio = pdrop_solve_ratio(k, n_image, layers, num_layers)
    else:
        ratio = pdrop_ratio
    counts = pdrop_counts(n_image, ratio, len(layers))
    keep = counts[layers.index(step.layer)]
    if keep < 1:
        raise ValueError(f"pdrop: --pdrop-ratio {ratio} keeps no image token at layer {step.layer} "
                         f"(int({n_image} * {ratio}**{layers.index(step.layer) + 1}) = 0)")
    if keep >= length:
        return None
    attn = step.attention(step.layer, step.hidden, "last")  # [B, 1, T]
    scores = attn[:, -1, start:start + length].float()
    return {"keep": pdrop_select(scores, keep), "insert": None, "renumber": True}

