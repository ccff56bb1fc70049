"""Image-complexity metrics on visual tokens (batched, float32 whatever the input dtype)."""
import math

import torch


def centred_gram(features):
    """features [B, N, D] -> (Gram matrix of the mean-centred tokens [B, N, N], centred tokens, mean [B, 1, D]).

    The mean is over tokens (per feature), as AgilePruner's effective_rank subtracts it."""
    x = features.float()
    mean = x.mean(dim=1, keepdim=True)
    centred = x - mean
    return centred @ centred.transpose(1, 2), centred, mean


def erank_from_gram(gram):
    """Effective rank from a centred Gram matrix [B, N, N] -> [B].

    Singular values s = sqrt(clamp(eigvalsh(gram), 1e-12)), p = s / (sum s + 1e-12),
    H = -sum p log(p + 1e-12), erank = exp(H): AgilePruner's formula and epsilons, so erank_avg = 90
    (measured with it) applies."""
    s = torch.linalg.eigvalsh(gram).clamp(min=1e-12).sqrt()
    p = s / (s.sum(dim=-1, keepdim=True) + 1e-12)
    return torch.exp(-(p * torch.log(p + 1e-12)).sum(dim=-1))


def effective_rank(features):
    """erank = exp(entropy of the normalised singular values) of the mean-centred token matrix.

    features [N, D] -> scalar tensor, or [B, N, D] -> [B]. Lies in [1, min(N - 1, D)] up to the
    epsilons (centring removes one dimension). Computed through the N x N Gram matrix, which is what
    the official code does and is cheaper than an SVD when N < D."""
    single = features.ndim == 2
    gram, _, _ = centred_gram(features[None] if single else features)
    erank = erank_from_gram(gram)
    return erank[0] if single else erank


def attention_entropy(attention):
    """Entropy (nats) of the CLS->patch attention renormalised over the patches: [N] -> scalar, [B, N] -> [B].

    Uniform attention over N patches gives log N; attention on a single patch gives 0."""
    a = attention.float()
    p = a / a.sum(dim=-1, keepdim=True)
    return -(p * torch.log(p.clamp(min=1e-30))).sum(dim=-1)


def erank_bounds(features):
    """An interval certain to hold the value `erank_from_gram(centred_gram(features))` computes, without
    computing it: features [B, N, D] -> (lo, hi), float64 [B] each.

    In exact arithmetic p >= 0 with sum p <= 1, so 0 <= -sum p log(p + 1e-12) + 1e-12 and the entropy is at
    most log N: the erank lies in [1 - 1e-12, N] whatever the spectrum. The float32 sum of N terms and the
    exp change that by a relative N * 2^-24 * log N at most (under 4e-4 for N = 576); the interval is
    widened by 1% + 2N * 2^-24 * log N on each side, far beyond that. For AgilePruner's certificate
    (agile.agile_select); loose by design, it costs nothing."""
    b, n = features.shape[0], features.shape[1]
    slack = 0.01 + 2 * n * 2.0 ** -24 * max(1.0, math.log(n))
    lo = torch.full((b,), 1.0 / (1.0 + slack), dtype=torch.float64, device=features.device)
    return lo, torch.full((b,), n * (1.0 + slack), dtype=torch.float64, device=features.device)
