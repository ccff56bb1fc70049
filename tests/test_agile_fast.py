"""AgilePruner's certified fast path (agile.agile_select): the same indices as the per-token loop on every
input, including the inputs the certificate cannot decide (ties at a threshold, an erank at the edge where
the walk changes, duplicates, zero tokens, mixed batches)."""
import math

import pytest
import torch

from llava.pruning import select_visual_tokens
from llava.pruning.agile import (agile_certified_walk, agile_from_geometry, agile_official, agile_reference_loop,
                                 agile_select, agile_thresholds, agile_walk, lazy_geometry)
from llava.pruning.geometry import token_geometry
from llava.pruning.metrics import effective_rank, erank_bounds
from llava.pruning.synthetic import synthetic_tokens
from test_pruning import plain_walk  # the walk written as plainly as possible, shared with the loop tests



def exact_pairs(dist, margin=0.0):
    """A pairs() for agile_certified_walk reading a full distance matrix [B, N, N], with a fixed margin."""
    def pairs(rows, cols):
        r = dist.gather(1, rows[:, :, None].expand(-1, -1, dist.shape[-1]))
        r = r.gather(2, cols[:, None, :].expand(-1, r.shape[1], -1))
        return r, torch.full_like(r, margin)
    return pairs


# ---- end to end: agile == the per-token loop --------------------------------------------------------
@pytest.mark.parametrize("regime,d", [("simple", 512), ("complex", 512), ("noise", 512), ("noise", 64)])
@pytest.mark.parametrize("k", [16, 64, 192])
def test_agile_select_equals_the_per_token_loop(regime, d, k):
    feats, attn = synthetic_tokens(regime, 2, 576, d, seed=k)
    stats = {}
    idx = agile_select(feats, attn, k, stats=stats).sort(dim=-1).values
    assert torch.equal(idx, agile_reference_loop(feats, attn, k))
    assert torch.equal(idx, select_visual_tokens("agile", feats, attn, k))
    # noise has no two tokens within tau_max: the certificate decides without the erank; the structured
    # regimes have near-duplicates among the visited tokens and take the exact path
    assert stats["exact"] == (0 if regime == "noise" else 2)


def test_a_mixed_batch_certifies_some_images_and_equals_one_image_at_a_time():
    noise, a_noise = synthetic_tokens("noise", 2, 576, 256, seed=1)
    simple, a_simple = synthetic_tokens("simple", 1, 576, 256, seed=2)
    feats = torch.cat([noise[:1], simple, noise[1:]])
    attn = torch.cat([a_noise[:1], a_simple, a_noise[1:]])
    stats = {}
    idx = agile_select(feats, attn, 64, stats=stats).sort(dim=-1).values
    assert stats["exact"] == 1  # only the simple image needed the erank
    for b in range(3):
        assert torch.equal(idx[b:b + 1], agile_select(feats[b:b + 1], attn[b:b + 1], 64).sort(dim=-1).values)
    assert torch.equal(idx, agile_reference_loop(feats, attn, 64))


def test_noise_is_decided_in_one_round_per_block_without_the_erank():
    feats, attn = synthetic_tokens("noise", 1, 576, 512, seed=3)
    stats = {}
    idx = agile_select(feats, attn, 64, stats=stats)
    assert stats == {"blocks": 2, "rounds": 2, "exact": 0}  # positions [0, 32), [32, 64): k x k distances, no erank
    assert torch.equal(idx.sort().values, attn.topk(64).indices.sort().values)


def test_the_official_style_computation_picks_the_same_tokens():
    for regime in ("simple", "complex", "noise"):
        feats, attn = synthetic_tokens(regime, 2, 576, 512, seed=5)
        for k in (32, 128):
            assert torch.equal(agile_official(feats, attn, k), select_visual_tokens("agile", feats, attn, k))


# ---- worst cases for the certificate -------------------------------------------------------------------
@pytest.mark.parametrize("zero_at", [None, 2, 30])
def test_exact_copies_are_decided_and_a_zero_token_goes_to_the_exact_path(zero_at):
    """A copy of the top token sits at distance ~0, below tau_1 for any erank >= 1 even with the margin:
    the certificate decides its suppression. A zero token (norm 1e-8) has an unbounded margin: once the
    walk visits it the image needs the exact path; if the walk stops before it, it does not matter."""
    feats, attn = synthetic_tokens("noise", 1, 64, 32, seed=6)
    order = attn.argsort(descending=True)[0]
    feats[0, order[1]] = feats[0, order[0]]
    if zero_at is not None:
        feats[0, order[zero_at]] = 0.0
    for k in (4, 20):
        stats = {}
        idx = agile_select(feats, attn, k, stats=stats).sort(dim=-1).values
        assert stats["exact"] == int(zero_at is not None and zero_at <= k)
        assert torch.equal(idx, agile_reference_loop(feats, attn, k))
        assert order[1] not in idx[0].tolist()  # the copy was suppressed


def _pair_features(dist_pair):
    """12 tokens (attention rank = index): a pair at cosine distance `dist_pair` at ranks 10-11, the rest
    orthogonal (distance 1)."""
    theta = math.acos(1 - dist_pair)
    e = torch.eye(16)
    b1, b2 = e[2], math.cos(theta) * e[2] + math.sin(theta) * e[3]
    feats = torch.stack([e[0], e[1]] + [e[4 + i] for i in range(7)] + [b1, b2, e[11]])[None]
    return feats, torch.linspace(1.0, 0.5, 12)[None]


@pytest.mark.parametrize("nudge", [-2, -1, 0, 1, 2])
def test_erank_at_the_edge_of_the_band(nudge):
    """The rank-10 token suppresses its twin iff dist < tau_10 = 10 * erank / erank_avg * 0.01. erank_avg is
    set so that tau_10 lands on the twin's distance, then nudged by a few float32 ulps either way: the
    outcome flips there, the certificate must not decide it, and the exact path must match the loop."""
    feats, attn = _pair_features(0.05)
    dist, erank = token_geometry(feats)
    d = dist[0, 9, 10].item()
    tau_at = torch.tensor(d, dtype=torch.float32)
    for _ in range(abs(nudge)):
        tau_at = tau_at.nextafter(torch.tensor(1.0 if nudge > 0 else 0.0))
    erank_avg = erank.item() * 10 * 0.01 / tau_at.item()
    stats = {}
    idx = agile_select(feats, attn, 11, erank_avg=erank_avg, stats=stats).sort(dim=-1).values
    assert stats["exact"] == 1
    assert torch.equal(idx, agile_reference_loop(feats, attn, 11, erank_avg=erank_avg))
    tau10 = agile_thresholds(erank, 12, erank_avg, 0.25, 0.01)[0, 9].item()
    assert (10 in idx[0].tolist()) == (not d < tau10)  # the twin is kept iff its distance is not below tau_10


@pytest.mark.parametrize("gap", [0, 1])
def test_a_tie_at_the_threshold(gap):
    """Distance exactly tau (not a kill: strict) and one ulp below (a kill). With tau_lo = tau_hi (an exact
    erank) and no margin the certificate decides both; with any band around the tie it must not."""
    dist = torch.tensor([[[0.0, 0.5, 0.9], [0.5, 0.0, 0.9], [0.9, 0.9, 0.0]]])
    tau = torch.tensor([[0.5, 0.5, 0.5]])
    if gap:
        dist[0, 0, 1] = dist[0, 1, 0] = torch.tensor(0.5).nextafter(torch.tensor(0.0))
    order = torch.tensor([[0, 1, 2]])
    keep, certified = agile_certified_walk(exact_pairs(dist), order, tau, tau, 2)
    assert certified.item() and torch.equal(keep, agile_walk(dist, order, tau, 2))
    assert keep[0].tolist() == ([True, True, False] if gap == 0 else [True, False, True])
    below_tau, above_tau = tau.nextafter(torch.zeros(1)), tau.nextafter(torch.ones(1))
    assert not agile_certified_walk(exact_pairs(dist), order, below_tau, above_tau, 2)[1].item()
    assert not agile_certified_walk(exact_pairs(dist, 1e-7), order, tau, tau, 2)[1].item()


@pytest.mark.parametrize("seed", range(6))
def test_a_certified_walk_is_the_walk_for_every_erank_in_the_interval(seed):
    """Random graphs and chains, random intervals: whenever the certificate holds, the plain loop at any
    erank in [lo, hi] (the ends, the middle, random points) keeps the same tokens."""
    g = torch.Generator().manual_seed(seed)
    n, k = 48, [5, 12, 30, 47][seed % 4]
    rand = torch.rand(n, n, generator=g) * 0.4
    rand = (rand + rand.T) / 2
    path = torch.ones(n, n)
    i = torch.arange(n - 1)
    path[i, i + 1] = path[i + 1, i] = 0.05
    decided = 0
    for dist in (rand, path):
        for width in (0.0, 0.01, 0.1, 1.0):
            e = 20 + 100 * torch.rand(1, generator=g, dtype=torch.float64)
            lo, hi = e, e * (1 + width)
            order = torch.randperm(n, generator=g)[None]
            shuffled = torch.empty_like(dist)
            shuffled[order[0][:, None], order[0][None, :]] = dist
            t_lo, t_hi = (agile_thresholds(x, n, 90.0, 0.25, 0.01) for x in (lo, hi))
            keep, certified = agile_certified_walk(exact_pairs(shuffled[None]), order, t_lo, t_hi, k)
            if not certified.item():
                continue
            decided += 1
            for x in (lo, hi, (lo + hi) / 2, lo + (hi - lo) * torch.rand(1, generator=g, dtype=torch.float64)):
                tau = agile_thresholds(x, n, 90.0, 0.25, 0.01)[0]
                assert keep[0].nonzero()[:, 0].tolist() == plain_walk(dist.tolist(), tau.tolist(), k)
    assert decided  # width 0 (an exact erank) always decides


# ---- the bounds the certificate rests on ------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 8, 64, 700])
def test_lazy_distances_stay_within_their_margin_of_token_geometry(d):
    """Blocks of every shape (MKL rounds products of < 64 rows differently from the full product) stay
    within the rigorous margin of token_geometry's distances; the margin is small (about 5 D 2^-24 w_i w_j)."""
    feats, _ = synthetic_tokens("complex", 2, 200, d, seed=d)
    feats[1] *= 1e3  # scale does not matter
    dist, _ = token_geometry(feats)
    pairs = lazy_geometry(feats)
    g = torch.Generator().manual_seed(d)
    for r, c in ((1, 200), (3, 7), (7, 64), (64, 3), (200, 200)):
        rows = torch.stack([torch.randperm(200, generator=g)[:r] for _ in range(2)])
        cols = torch.stack([torch.randperm(200, generator=g)[:c] for _ in range(2)])
        got, margin = pairs(rows, cols)
        want = dist.gather(1, rows[:, :, None].expand(-1, -1, 200)).gather(2, cols[:, None, :].expand(-1, r, -1))
        assert ((got - want).abs() <= margin).all()
        assert margin.median() < 30 * max(d, 8) * 2.0 ** -24 + 1e-5


@pytest.mark.parametrize("case", ["rank1", "duplicates", "noise", "wide", "d_below_n", "tiny_n"])
def test_erank_bounds_hold_the_computed_erank(case):
    g = torch.Generator().manual_seed(0)
    n, d = (576, 64) if case == "d_below_n" else (3, 16) if case == "tiny_n" else (576, 1024)
    feats = torch.randn(2, n, d, generator=g)
    if case == "rank1":
        feats = torch.randn(2, n, 1, generator=g) * torch.randn(2, 1, d, generator=g)
    elif case == "duplicates":
        feats[:, 1:] = feats[:, :1]
    elif case == "wide":
        feats *= 1e4
    lo, hi = erank_bounds(feats)
    erank = effective_rank(feats).double()
    assert (lo <= erank).all() and (erank <= hi).all()
    assert hi[0] < 1.02 * n + 1 and lo[0] > 0.98


def test_the_walk_on_full_geometry_is_untouched():
    """agile_from_geometry (the exact path) still equals the loop on the same geometry."""
    feats, attn = synthetic_tokens("simple", 2, 576, 512, seed=9)
    dist, erank = token_geometry(feats)
    assert torch.equal(agile_from_geometry(dist, erank, attn, 64).sort(dim=-1).values,
                       agile_reference_loop(feats, attn, 64))


def test_bench_select_agile_comparison_reports_identity():
    from llava.tools.bench_select import agile_comparison

    inputs = {r: synthetic_tokens(r, 2, 96, 64, seed=i) for i, r in enumerate(("simple", "complex", "noise"))}
    lines = agile_comparison(inputs, 16, 1, torch.device("cpu"))
    assert len(lines) == 3 and all("identical: True" in line and "official" in line for line in lines)
