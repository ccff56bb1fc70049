"""Image-complexity metrics on visual tokens (batched, float32 whatever the input dtype)."""
import torch


def effective_rank(features):
    """erank = exp(entropy of the normalised singular values) of the mean-centred token matrix.

    features: [N, D] or [B, N, D] -> scalar or [B]. Computed as AgilePruner's code does (and in the
    space its erank_avg=90 was measured in): centre over tokens, C = X X^T, singular values
    sqrt(clamp(eigvalsh(C), 1e-12)), p = s / (sum s + 1e-12), H = -sum p log(p + 1e-12).
    """
    single = features.ndim == 2
    x = features.float()[None] if single else features.float()
    x = x - x.mean(dim=1, keepdim=True)
    eig = torch.linalg.eigvalsh(x @ x.transpose(1, 2))
    s = eig.clamp(min=1e-12).sqrt()
    p = s / (s.sum(dim=-1, keepdim=True) + 1e-12)
    erank = torch.exp(-(p * torch.log(p + 1e-12)).sum(dim=-1))
    return erank[0] if single else erank


def attention_entropy(attention):
    """Entropy (nats) of the CLS->patch attention renormalised over the patches. [N] or [B, N]."""
    a = attention.float()
    p = a / a.sum(dim=-1, keepdim=True)
    return -(p * torch.log(p.clamp(min=1e-30))).sum(dim=-1)
