"""Random stand-ins for LLaVA's visual tokens in two complexity regimes (and noise), for tests and benches."""
import torch

REGIMES = ("simple", "complex", "noise")
SPECTRUM = {"simple": 1.6, "complex": 1.0}  # power-law decay of the structured part: erank ~60 / ~120 at 576 x 4096


def synthetic_tokens(regime, batch=1, n=576, d=4096, seed=0, device="cpu"):
    """(features [B, N, D], attention [B, N]) for one regime, reproducible from `seed`.

    simple / complex: a shared mean direction (norm 0.5, so cosine distances spread over about 0.2-1
    as they do between real post-projector tokens) + a rank-min(256, N, D) part with singular values
    i^-alpha (alpha 1.6 / 1.0) scaled to unit mean norm + small isotropic noise (norm 0.05). noise:
    i.i.d. Gaussian tokens. Attention: softmax(2 * Gaussian), a peaked CLS row summing to 1."""
    g = torch.Generator().manual_seed(seed)
    if regime == "noise":
        feats = torch.randn(batch, n, d, generator=g)
    elif regime in SPECTRUM:
        r = min(256, n, d)
        spectrum = torch.arange(1, r + 1, dtype=torch.float32) ** -SPECTRUM[regime]
        basis = torch.linalg.qr(torch.randn(d, r, generator=g))[0]  # [d, r] orthonormal columns
        structured = (torch.randn(batch, n, r, generator=g) * spectrum) @ basis.T
        structured = structured / structured.norm(dim=-1).mean(dim=-1)[:, None, None]
        mean = torch.randn(d, generator=g)
        feats = structured + 0.5 * mean / mean.norm() + 0.05 * torch.randn(batch, n, d, generator=g) / d ** 0.5
    else:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    attention = torch.softmax(2 * torch.randn(batch, n, generator=g), dim=-1)
    return feats.to(device), attention.to(device)
