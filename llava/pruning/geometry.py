"""Geometry every selection method shares: cosine distances, the effective rank from the same product,
attention order, the greedy max-min walk, and the complexity rule of the image-aware hybrids.

All functions are batched ([B, ...]), run in the input's float dtype (the front door hands float32), and
break ties toward the lower token index; row b of a batch equals the result for image b alone.
"""
import torch

from .metrics import centred_gram, erank_from_gram
from .registry import Option

COMPLEXITY_RULES = ("fixed", "adaptive", "inverse")
ERANK_AVG = Option("erank_avg", 90.0, "agile and the adaptive/inverse rules: reference effective rank (90 for "
                   "LLaVA-1.5-7B; python -m llava.tools.calibrate for other models)", low=0.0, low_open=True)
COMPLEXITY_RULE = Option("complexity_rule", "fixed", "mix/vispruner: fixed R, adaptive (R falls as the image's "
                         "erank rises) or inverse (ablation)", kind=str, choices=COMPLEXITY_RULES)
SHARE_SLOPE = Option("share_slope", 1.0, "adaptive/inverse: R = clip(R0 -/+ slope * (erank/erank-avg - 1), "
                     "share-min, share-max)", low=0.0)
SHARE_MIN = Option("share_min", 0.1, "adaptive/inverse: lower clip of R", low=0.0, high=1.0)
SHARE_MAX = Option("share_max", 0.9, "adaptive/inverse: upper clip of R", low=0.0, high=1.0)
COMPLEXITY_OPTIONS = (ERANK_AVG, COMPLEXITY_RULE, SHARE_SLOPE, SHARE_MIN, SHARE_MAX)


def check_shares(options):
    """Cross-option check of the complexity rule's clip range."""
    if options["share_min"] > options["share_max"]:
        raise ValueError(f"--share-min ({options['share_min']}) must not exceed --share-max ({options['share_max']})")


# ---- shared geometry ----------------------------------------------------------------------------
def cosine_distance(x):
    """x [B, N, D] -> 1 - cos, [B, N, N]. Rows are divided by (L2 norm + 1e-8) first, as the
    reference implementations do."""
    x = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
    return 1.0 - x @ x.transpose(1, 2)


def token_geometry(features):
    """Cosine distances [B, N, N] and effective rank [B] of features [B, N, D] from one N x N product.

    The erank needs the Gram matrix of the mean-centred tokens C; the plain dot products follow from
    it, x_i.x_j = C_ij + c_i.m + c_j.m + m.m (c_i the centred token, m the mean), so the second
    N x D x N product that `cosine_distance` would run is skipped (the bulk of the cost on a CPU).
    The distances are 1 - x_i.x_j / ((|x_i| + 1e-8)(|x_j| + 1e-8)), the same quantity as
    `cosine_distance` up to float32 rounding (~1e-7)."""
    gram, centred, mean = centred_gram(features)
    erank = erank_from_gram(gram)
    along = centred @ mean.transpose(1, 2)  # [B, N, 1]
    dots = gram + along + along.transpose(1, 2) + (mean * mean).sum(dim=-1, keepdim=True)
    norm = features.float().norm(dim=-1) + 1e-8
    return 1.0 - dots / (norm[:, :, None] * norm[:, None, :]), erank


def attention_order(attention):
    """Token indices by descending attention, ties to the lower index: [B, N] -> [B, N]."""
    return torch.sort(attention, dim=-1, descending=True, stable=True).indices


def true_positions(mask, k):
    """The positions of the first k True entries of each row of a bool mask [B, N] (every row has at
    least k), ascending: [B, k]. No host synchronisation (unlike nonzero)."""
    return torch.sort(mask.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :k]


def max_min_walk(dist, chosen, steps):
    """Greedy max-min (k-center) steps on a distance matrix, continuing from the set `chosen`.

    dist [B, N, N]; chosen [B, N] bool, non-empty per row. Each step picks the unchosen token whose
    distance to its nearest chosen token (min over chosen s of dist[s, j]) is largest, ties to the
    lowest index. Returns the picks in order, [B, steps]. One running-min vector (O(steps * N)), no
    host synchronisation inside the loop.
    """
    b = dist.shape[0]
    rows = torch.arange(b, device=dist.device)
    chosen = chosen.clone()
    inf = torch.tensor(float("inf"), device=dist.device)
    min_dist = torch.where(chosen[:, :, None], dist, inf).amin(dim=1)
    picks = torch.zeros(b, steps, dtype=torch.long, device=dist.device)
    for step in range(steps):
        pick = torch.where(chosen, -inf, min_dist).argmax(dim=-1)
        chosen[rows, pick] = True
        min_dist = torch.minimum(min_dist, dist[rows, pick])
        picks[:, step] = pick
    return picks


def most_isolated(dist):
    """DivPrune's first token: the one whose nearest other token is farthest, [B]. Self-distances are
    excluded explicitly (DivPrune takes the second-smallest entry of the column, which is the same
    thing unless two tokens are exact duplicates)."""
    eye = torch.eye(dist.shape[-1], dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, float("inf")).amin(dim=1).argmax(dim=-1)


def walk_from(dist, first, k):
    """k tokens: `first` [B], then k - 1 max-min steps. [B, k]."""
    chosen = torch.zeros(dist.shape[:2], dtype=torch.bool, device=dist.device)
    chosen[torch.arange(dist.shape[0], device=dist.device), first] = True
    return torch.cat([first[:, None], max_min_walk(dist, chosen, k - 1)], dim=1)


# ---- image-aware hybrids ------------------------------------------------------------------------------
def complexity_share(base, erank, rule, erank_avg, share_slope, share_min, share_max):
    """The attention share R of a hybrid after the complexity rule, float64 [B].

    fixed: R = base. adaptive: R = clip(base - share_slope * (erank/erank_avg - 1), share_min, share_max),
    so simple images (low erank) get more attention-chosen tokens and complex ones more diverse ones, as
    AgilePruner's findings say; inverse: the sign flipped (the paper's ablation). Computed in float64 so
    that the fixed rule's counts are the Python arithmetic of the original methods (floor(k * r))."""
    if rule == "fixed":
        return torch.full(erank.shape, float(base), dtype=torch.float64, device=erank.device)
    sign = -1.0 if rule == "adaptive" else 1.0
    r = base + sign * share_slope * (erank.double() / erank_avg - 1.0)
    return r.clamp(share_min, share_max)


def hybrid_geometry(features, base, options, similarity_features=None):
    """Cosine distances [B, N, N] and the attention share R [B] (float64) of a hybrid method. The
    erank (an N x N eigendecomposition) of `features` is computed only when the rule needs it; the
    distances are those of `similarity_features` when given (VisPruner's tower states), else of `features`."""
    rule = options["complexity_rule"]
    if rule == "fixed":
        dist = cosine_distance(features if similarity_features is None else similarity_features)
        erank = torch.zeros(features.shape[0], dtype=torch.float64, device=features.device)
    elif similarity_features is None:
        dist, erank = token_geometry(features)
    else:
        dist = cosine_distance(similarity_features)
        erank = erank_from_gram(centred_gram(features)[0])
    share = complexity_share(base, erank, rule, options["erank_avg"], options["share_slope"],
                             options["share_min"], options["share_max"])
    return dist, share
