"""The pruning methods as pure tensor functions: invariants, reference rules, metrics, errors."""
import math

import pytest
import torch

from llava.pruning import (METHODS, PrunedTokens, agile_from_geometry, agile_reference_from_geometry,
                           agile_reference_loop, agile_walk, attention_entropy, cosine_distance, effective_rank,
                           fastv_select, prune_visual_tokens, register, select_visual_tokens, token_geometry,
                           visionzip_tokens)
from llava.pruning.agile import agile_thresholds
from llava.pruning.synthetic import synthetic_tokens
from llava.pruning.geometry import complexity_share
from llava.pruning.methods import VISIONZIP_DOMINANT_SHARE

# post-projector methods that read the features and the CLS attention only (the others have their own tests)
SELECTORS = sorted(m for m, s in METHODS.items() if s.stage == "post-projector" and not s.inputs)
ALL_PRE_LLM = SELECTORS + ["visionzip"]
N, D = 576, 64


def inputs(b=2, regime="complex", seed=0, n=N, d=D):
    return synthetic_tokens(regime, b, n, d, seed=seed)


def test_the_registry_holds_every_method_with_its_stage():
    assert {"none", "random", "fastervlm", "divprune", "fps", "vispruner", "visionzip", "agile", "mix",
            "fastv"} <= set(METHODS)
    stages = {m: METHODS[m].stage for m in ("none", "fastv", "visionzip", "agile", "vispruner")}
    assert stages == {"none": "none", "fastv": "decoder", "visionzip": "pre-projector", "agile": "post-projector",
                      "vispruner": "post-projector"}
    assert {m for m in ("fastervlm", "fps", "mix", "vispruner", "visionzip", "agile", "divprune", "random")
            if METHODS[m].needs_attention} == {"fastervlm", "fps", "mix", "vispruner", "visionzip", "agile"}
    assert METHODS["agile"].option_names == ("erank_avg", "tau_max", "tau_step")
    assert METHODS["fastervlm"].option_names == ()


def test_a_method_is_one_registered_function():
    @register("test_every_other")
    def every_other(features, attention, k):
        return torch.arange(0, 2 * k, 2).expand(features.shape[0], k)

    try:
        feats, _ = inputs()
        assert select_visual_tokens("test_every_other", feats, None, 5).tolist() == [[0, 2, 4, 6, 8]] * 2
        with pytest.raises(ValueError, match="registered twice"):
            register("test_every_other")(every_other)
    finally:
        del METHODS["test_every_other"]


# ---- invariants every method keeps ----------------------------------------------------------------
@pytest.mark.parametrize("method", SELECTORS)
@pytest.mark.parametrize("k", [1, 32, 64, 575])
def test_exactly_k_ascending_unique_indices(method, k):
    feats, attn = inputs()
    idx = select_visual_tokens(method, feats, attn, k)
    assert idx.shape == (2, k) and idx.dtype == torch.long
    assert (idx[:, 1:] > idx[:, :-1]).all() and idx.min() >= 0 and idx.max() < N


@pytest.mark.parametrize("method", ALL_PRE_LLM + ["none"])
def test_k_at_least_n_keeps_everything_untouched(method):
    feats, attn = inputs()
    for k in (N, N + 10):
        kept, idx = prune_visual_tokens(method, feats, attn, k)
        assert kept is feats and torch.equal(idx, torch.arange(N).expand(2, N))
        if method != "visionzip":
            assert torch.equal(select_visual_tokens(method, feats, attn, k), torch.arange(N).expand(2, N))


def test_none_keeps_everything_whatever_k():
    feats, _ = inputs()
    assert torch.equal(select_visual_tokens("none", feats, None, 8), torch.arange(N).expand(2, N))
    assert prune_visual_tokens("none", feats, None, None).features is feats


@pytest.mark.parametrize("method", ALL_PRE_LLM)
def test_batch_equals_one_image_at_a_time_and_deterministic(method):
    feats, attn = inputs(b=3, seed=1)
    kept, idx = prune_visual_tokens(method, feats, attn, 64)
    for i in range(3):
        one_kept, one_idx = prune_visual_tokens(method, feats[i : i + 1], attn[i : i + 1], 64)
        assert torch.equal(idx[i], one_idx[0]) and torch.equal(kept[i], one_kept[0])
    again = prune_visual_tokens(method, feats, attn, 64)
    assert torch.equal(again.indices, idx) and torch.equal(again.features, kept)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", SELECTORS)
def test_half_precision_inputs_select_like_float32_of_the_same_values(method, dtype):
    feats, attn = inputs(seed=2, regime="simple")
    low, low_attn = feats.to(dtype), attn.to(dtype)
    assert torch.equal(select_visual_tokens(method, low, low_attn, 64),
                       select_visual_tokens(method, low.float(), low_attn.float(), 64))


@pytest.mark.parametrize("method", SELECTORS)
def test_prune_gathers_the_selected_features_in_the_input_dtype(method):
    feats, attn = inputs()
    feats = feats.half()
    result = prune_visual_tokens(method, feats, attn, 40)
    assert isinstance(result, PrunedTokens) and result.features.dtype == torch.float16
    assert torch.equal(result.indices, select_visual_tokens(method, feats, attn, 40))
    assert torch.equal(result.features, torch.stack([feats[i, result.indices[i]] for i in range(2)]))


# ---- the baselines against their rules ---------------------------------------------------------------
def test_fastervlm_is_top_k_attention():
    feats, attn = inputs()
    idx = select_visual_tokens("fastervlm", feats, attn, 50)
    assert torch.equal(idx, attn.topk(50, dim=-1).indices.sort(dim=-1).values)


def max_min_by_hand(x, k, first=None):
    """Max-min diversity written plainly, O(k^2 n) with Python lists; first=None: DivPrune's most isolated token."""
    xn = x / x.norm(dim=-1, keepdim=True)
    dist = (1 - xn @ xn.T).tolist()
    n = len(dist)
    if first is None:
        nearest = [min(dist[i][j] for i in range(n) if i != j) for j in range(n)]
        first = max(range(n), key=lambda j: (nearest[j], -j))
    chosen = [first]
    while len(chosen) < k:
        best = max((j for j in range(n) if j not in chosen), key=lambda j: (min(dist[s][j] for s in chosen), -j))
        chosen.append(best)
    return sorted(chosen)


def test_divprune_matches_the_max_min_rule():
    feats, _ = inputs(b=1, n=120, d=16, seed=3, regime="noise")
    assert select_visual_tokens("divprune", feats, None, 12)[0].tolist() == max_min_by_hand(feats[0], 12)


def test_fps_starts_from_the_top_attention_token():
    feats, attn = inputs(b=1, n=120, d=16, seed=4, regime="noise")
    top = int(attn[0].argmax())
    idx = select_visual_tokens("fps", feats, attn, 12)[0].tolist()
    assert top in idx and idx == max_min_by_hand(feats[0], 12, first=top)


def test_mix_is_top_attention_then_diversity_conditioned_on_it():
    feats, attn = inputs(b=1, n=120, d=16, seed=5, regime="noise")
    k, share = 12, 0.25  # round(3.0) = 3 attention tokens, then 9 max-min steps from them
    idx = select_visual_tokens("mix", feats, attn, k, attention_share=share)[0].tolist()
    top = attn[0].topk(3).indices.tolist()
    xn = feats[0] / feats[0].norm(dim=-1, keepdim=True)
    dist = (1 - xn @ xn.T).tolist()
    chosen = list(top)
    while len(chosen) < k:
        chosen.append(max((j for j in range(120) if j not in chosen),
                          key=lambda j: (min(dist[s][j] for s in chosen), -j)))
    assert idx == sorted(chosen)
    assert select_visual_tokens("mix", feats, attn, k, attention_share=0.0).tolist() == \
        select_visual_tokens("divprune", feats, attn, k).tolist()
    assert select_visual_tokens("mix", feats, attn, k, attention_share=1.0).tolist() == \
        select_visual_tokens("fastervlm", feats, attn, k).tolist()


def test_vispruner_keeps_floor_k_r_important_tokens_and_k_in_all():
    feats, attn = inputs(b=1, seed=6)
    states = torch.randn(1, N, 32, generator=torch.Generator().manual_seed(1))
    for ratio in (0.0, 0.3, 0.75, 1.0):
        idx = set(select_visual_tokens("vispruner", feats, attn, 64, important_ratio=ratio, states=states)[0].tolist())
        assert len(idx) == 64 and set(attn[0].topk(int(64 * ratio)).indices.tolist()) <= idx
    assert select_visual_tokens("vispruner", feats, attn, 64, important_ratio=1.0, states=states).tolist() == \
        select_visual_tokens("fastervlm", feats, attn, 64).tolist()


def test_vispruner_deduplicates_on_the_tower_states_by_default():
    feats, attn = inputs(b=2, seed=6)
    states = torch.randn(2, N, 32, generator=torch.Generator().manual_seed(1))
    tower = select_visual_tokens("vispruner", feats, attn, 64, states=states)
    # the tower variant is the projected variant run on the states (the erank, unused by the fixed rule, aside)
    assert torch.equal(tower, select_visual_tokens("vispruner", states, attn, 64, vispruner_similarity="projected"))
    assert not torch.equal(tower, select_visual_tokens("vispruner", feats, attn, 64, vispruner_similarity="projected"))
    assert torch.equal(tower[1:], select_visual_tokens("vispruner", feats[1:], attn[1:], 64, states=states[1:]))


def test_random_is_seeded_and_the_same_for_every_image():
    feats, attn = inputs()
    a = select_visual_tokens("random", feats, None, 64, seed=1)
    assert torch.equal(a, select_visual_tokens("random", feats, None, 64, seed=1)) and torch.equal(a[0], a[1])
    assert not torch.equal(a, select_visual_tokens("random", feats, None, 64, seed=2))


def test_fastv_select_top_k_of_the_last_token_attention():
    att = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0]])
    assert fastv_select(att, 2).tolist() == [[1, 3]]
    assert fastv_select(att.half(), 5).tolist() == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="positive integer"):
        fastv_select(att, 0)


# ---- AgilePruner ----------------------------------------------------------------------------------
def kept_with_backfill(idx, feats, attn, erank_avg=90.0):
    """Pairs (i, j) of kept tokens where j ranks after i and lies within tau_i of it: j can only have
    come from the backfill."""
    dist, erank = token_geometry(feats[None])
    rank = torch.empty(attn.shape[0], dtype=torch.long)
    rank[attn.argsort(descending=True, stable=True)] = torch.arange(attn.shape[0])
    tau = agile_thresholds(erank, attn.shape[0], erank_avg, 0.25, 0.01)[0]
    return [(i, j) for i in idx for j in idx if rank[i] < rank[j] and dist[0, i, j] < tau[rank[i]]]


@pytest.mark.parametrize("regime", ["simple", "complex"])
@pytest.mark.parametrize("k", [32, 64, 128, 192])
def test_agile_matches_the_per_token_loop(regime, k):
    feats, attn = inputs(b=2, regime=regime, seed=k, d=512)  # erank ~44 (simple) and ~100 (complex)
    idx = select_visual_tokens("agile", feats, attn, k)
    assert torch.equal(idx, agile_reference_loop(feats, attn, k))
    assert not torch.equal(idx, select_visual_tokens("fastervlm", feats, attn, k))  # suppression happened
    if regime == "simple" and k >= 64:  # few tokens survive: the backfill is exercised too
        assert kept_with_backfill(idx[0].tolist(), feats[0], attn[0])


def test_agile_complex_regime_fills_k_without_backfill():
    feats, attn = inputs(b=1, regime="complex", seed=7, d=512)
    idx = select_visual_tokens("agile", feats, attn, 32)[0].tolist()
    assert not kept_with_backfill(idx, feats[0], attn[0])


def test_agile_suppresses_duplicates_and_backfills_them_last():
    # tokens 0..3 are copies of one vector (0 has the top attention), 4..7 are distinct directions
    base = torch.eye(8)[None]
    feats = torch.cat([base[:, :1].expand(1, 4, 8), base[:, 1:5]], dim=1)
    attn = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]])
    # duplicates are at distance 0 < tau_1: 0 kept, 1-3 suppressed, then 4, 5, 6, 7
    assert select_visual_tokens("agile", feats, attn, 4, erank_avg=1.0)[0].tolist() == [0, 4, 5, 6]
    # 6 asked, 5 survive (0, 4, 5, 6, 7): the backfill adds the best suppressed token by attention, 1
    assert select_visual_tokens("agile", feats, attn, 6, erank_avg=1.0)[0].tolist() == [0, 1, 4, 5, 6, 7]
    assert torch.equal(agile_reference_loop(feats, attn, 6, erank_avg=1.0), torch.tensor([[0, 1, 4, 5, 6, 7]]))


def test_agile_threshold_grows_with_attention_rank():
    """Two pairs at cosine distance 0.05: the pair at ranks 1-2 (tau_1 = 0.01) both stay; of the pair at
    ranks 10-11 (tau_10 = 0.10) the second is suppressed and the last token takes its place."""
    theta = math.acos(1 - 0.05)
    e = torch.eye(16)
    a1, a2 = e[0], math.cos(theta) * e[0] + math.sin(theta) * e[1]
    b1, b2 = e[2], math.cos(theta) * e[2] + math.sin(theta) * e[3]
    feats = torch.stack([a1, a2] + [e[4 + i] for i in range(7)] + [b1, b2, e[11]])[None]  # 12 tokens
    attn = torch.linspace(1.0, 0.5, 12)[None]  # attention rank = position
    erank = token_geometry(feats)[1].item()  # erank_avg = erank: tau_i = 0.01 * i
    idx = select_visual_tokens("agile", feats, attn, 11, erank_avg=erank)[0].tolist()
    assert idx == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
    # thresholds 100x smaller: nothing is suppressed, plain attention order
    assert select_visual_tokens("agile", feats, attn, 11, erank_avg=erank * 100)[0].tolist() == list(range(11))
    # tau is capped: with tau_max = 0.04 the rank-10 token cannot suppress its twin at distance 0.05
    assert select_visual_tokens("agile", feats, attn, 11, erank_avg=erank, tau_max=0.04)[0].tolist() == list(range(11))


def test_agile_suppression_is_strict():
    """A token at distance exactly tau is not suppressed ("below the threshold")."""
    dist = torch.tensor([[[0.0, 0.5, 0.9], [0.5, 0.0, 0.9], [0.9, 0.9, 0.0]]])
    order = torch.tensor([[0, 1, 2]])
    tau = torch.tensor([[0.5, 0.5, 0.5]])
    assert agile_walk(dist, order, tau, 2)[0].tolist() == [True, True, False]
    assert agile_walk(dist, order, tau.nextafter(torch.ones(1)), 2)[0].tolist() == [True, False, True]


def test_agile_thresholds_are_the_python_float_formula_rounded_to_float32():
    erank = torch.tensor([61.3, 122.7])
    tau = agile_thresholds(erank, 576, 90.0, 0.25, 0.01)
    for i, e in enumerate(erank.tolist()):
        expected = [min(r * (e / 90.0 * 0.01), 0.25) for r in range(1, 577)]
        assert torch.equal(tau[i], torch.tensor(expected, dtype=torch.float64).float())
    assert tau[1, 17].item() == pytest.approx(18 * 122.7 / 90 * 0.01) and tau[1, 100].item() == 0.25


def test_agile_walk_stops_early_when_nothing_is_suppressed():
    feats, attn = inputs(b=1, regime="noise", d=512)  # no two tokens within tau_max of each other
    dist, erank = token_geometry(feats)
    stats = {}
    idx = agile_from_geometry(dist, erank, attn, 64, stats=stats)
    assert stats == {"blocks": 1, "rounds": 1}  # the first 2k positions, one round to see nothing changes
    assert torch.equal(idx.sort().values, attn.topk(64).indices.sort().values)


def plain_walk(dist, tau, k):
    """The walk in attention order, written as plainly as possible (order = identity)."""
    n = len(dist)
    alive, kept = [True] * n, []
    for p in range(n):
        if alive[p] and len(kept) < k:
            kept.append(p)
            alive[p] = False
            for q in range(n):
                alive[q] = alive[q] and not dist[p][q] < tau[p]
    for p in range(n):
        if len(kept) < k and p not in kept:
            kept.append(p)
    return sorted(kept)


@pytest.mark.parametrize("k", [3, 10, 31, 40, 63])
def test_vectorised_walk_on_worst_case_chains_and_random_graphs(k):
    n = 64
    # a path 0-1-2-...: each token suppresses the next, so the walk alternates keep/suppress and
    # the fixed point needs ~n rounds; it also spans several blocks
    path = torch.ones(n, n)
    idx = torch.arange(n - 1)
    path[idx, idx + 1] = path[idx + 1, idx] = 0.0
    g = torch.Generator().manual_seed(k)
    rand = torch.rand(n, n, generator=g)
    rand = (rand + rand.T) / 2
    for dist in (path, rand):
        tau = torch.full((n,), 0.3) if dist is path else torch.linspace(0.05, 0.4, n)
        perm = torch.randperm(n, generator=g)  # a token order that is not the index order
        shuffled = torch.empty_like(dist)
        shuffled[perm[:, None], perm[None, :]] = dist
        keep = agile_walk(shuffled[None], perm[None], tau[None], k)[0]
        assert keep.nonzero()[:, 0].tolist() == plain_walk(dist.tolist(), tau.tolist(), k)


def test_agile_reference_from_geometry_matches_the_vectorised_walk():
    feats, attn = inputs(b=2, regime="simple", seed=11, d=512)
    dist, erank = token_geometry(feats)
    for k in (16, 100):
        assert torch.equal(agile_reference_from_geometry(dist, erank, attn, k),
                           select_visual_tokens("agile", feats, attn, k))


def test_selection_is_float32_under_autocast_and_reduced_matmul_precision():
    feats, attn = inputs(regime="simple", seed=12, d=512)
    expected = {m: select_visual_tokens(m, feats, attn, 64) for m in ("agile", "divprune")}
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for m, idx in expected.items():
                assert torch.equal(select_visual_tokens(m, feats, attn, 64), idx)
        assert torch.get_float32_matmul_precision() == "medium"  # restored
    finally:
        torch.set_float32_matmul_precision(before)


# ---- geometry and metrics -----------------------------------------------------------------------------
def test_token_geometry_is_cosine_distance_and_effective_rank():
    feats, _ = inputs(regime="simple", d=512)
    dist, erank = token_geometry(feats)
    assert (dist - cosine_distance(feats)).abs().max() < 1e-5
    assert torch.equal(erank, effective_rank(feats))
    assert cosine_distance(feats)[0].diagonal().abs().max() < 1e-5


def test_effective_rank_known_matrices():
    n = 6
    # a regular simplex: n+1 points, centred already, rank n, all non-zero singular values equal -> erank n
    simplex = torch.eye(n + 1) - 1.0 / (n + 1)
    assert effective_rank(simplex).item() == pytest.approx(n, rel=1e-4)
    # orthonormal rows q and -q: mean 0, so centring changes nothing; 2n rows of rank n, equal singular
    # values -> erank n (the n zero eigenvalues come out of float32 eigvalsh as ~1e-7, hence the tolerance)
    q = torch.linalg.qr(torch.randn(32, n))[0].T  # [n, 32]
    assert effective_rank(torch.cat([q, -q])).item() == pytest.approx(n, rel=5e-3)
    # rank 1 after centring: erank 1 (up to float32 eigenvalue noise and the 1e-12 epsilons)
    rank1 = torch.arange(1.0, 11.0)[:, None] * torch.randn(1, 32) + torch.randn(1, 32)
    assert effective_rank(rank1).item() == pytest.approx(1.0, abs=2e-2)
    # a general matrix with N < D (as 576 tokens x 4096): exp(entropy) of the singular values of the
    # centred matrix, against a float64 SVD over its N - 1 non-zero singular values
    x = torch.randn(24, 64, dtype=torch.float64)
    s = torch.linalg.svdvals(x - x.mean(0))[:-1]
    p = s / s.sum()
    assert effective_rank(x.float()).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-3)
    assert effective_rank(torch.stack([simplex[:, :7], torch.eye(7)])).shape == (2,)


def test_attention_entropy():
    uniform = torch.full((2, 576), 0.001)  # not normalised: the entropy renormalises over the patches
    assert torch.allclose(attention_entropy(uniform), torch.full((2,), math.log(576)))
    onehot = torch.zeros(1, 576)
    onehot[0, 7] = 0.3
    assert attention_entropy(onehot).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_entropy(torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2))


# ---- image-aware hybrids --------------------------------------------------------------------------
def test_complexity_share_formula():
    erank = torch.tensor([45.0, 90.0, 135.0, 900.0])
    kw = dict(erank_avg=90.0, share_slope=0.5, share_min=0.1, share_max=0.9)
    assert complexity_share(0.5, erank, "fixed", **kw).tolist() == [0.5] * 4
    assert complexity_share(0.5, erank, "adaptive", **kw).tolist() == pytest.approx([0.75, 0.5, 0.25, 0.1])
    assert complexity_share(0.5, erank, "inverse", **kw).tolist() == pytest.approx([0.25, 0.5, 0.75, 0.9])


def count_top_attention(idx, attn, k):
    return len(set(attn.topk(k).indices.tolist()) & set(idx.tolist()))


@pytest.mark.parametrize("method,option", [("mix", "attention_share"), ("vispruner", "important_ratio")])
def test_hybrid_rules_move_the_attention_share_with_erank(method, option):
    k = 64
    simple, s_attn = inputs(b=1, regime="simple", seed=5, d=512)
    complex_, c_attn = inputs(b=1, regime="complex", seed=5, d=512)
    assert effective_rank(simple).item() < 90 < effective_rank(complex_).item()
    counts = {}
    for rule in ("fixed", "adaptive", "inverse"):
        for name, feats, attn in (("simple", simple, s_attn), ("complex", complex_, c_attn)):
            # the same attention row for both images, so only the erank differs
            extra = {"vispruner_similarity": "projected"} if method == "vispruner" else {}
            idx = select_visual_tokens(method, feats, s_attn, k, complexity_rule=rule, **{option: 0.5}, **extra)[0]
            counts[rule, name] = count_top_attention(idx, s_attn[0], k)
    assert counts["adaptive", "simple"] > counts["fixed", "simple"] > counts["inverse", "simple"]
    assert counts["adaptive", "complex"] < counts["fixed", "complex"] < counts["inverse", "complex"]
    assert counts["adaptive", "simple"] > counts["adaptive", "complex"]
    assert counts["inverse", "simple"] < counts["inverse", "complex"]


# ---- VisionZip ------------------------------------------------------------------------------------------
def test_visionzip_dominant_and_contextual_by_hand():
    # CLS + 8 patches, 2-d states; keys put patches {1,2,3,4} near (1,0) and {5,6,7,8} near (0,1)
    hidden = torch.arange(9 * 2, dtype=torch.float32).view(1, 9, 2)
    keys = torch.tensor([[0, 0], [1, 0], [1, .1], [.9, 0], [1, .2], [0, 1], [.1, 1], [0, .9], [.2, 1]])[None].float()
    attention = torch.tensor([[.1, .9, .2, .3, .4, .5, .6, .8]])  # patch j+1 has attention[j]; top: patches 2, 8
    out, _ = visionzip_tokens(hidden[:, 1:], attention, 5, cls_features=hidden[:, 0], keys=keys[:, 1:],
                              dominant=3)  # CLS + 2 dominant, 2 contextual
    assert out.shape == (1, 5, 2)
    assert torch.equal(out[0, :3], hidden[0, [0, 2, 8]])  # CLS first, then dominant patches in raster order
    # the rest in raster order: 1,3,4,5,6,7 -> step 3 -> targets 1 and 5; 3,4 join 1; 6,7 join 5
    torch.testing.assert_close(out[0, 3], hidden[0, 1] + hidden[0, [3, 4]].mean(0))
    torch.testing.assert_close(out[0, 4], hidden[0, 5] + hidden[0, [6, 7]].mean(0))


@pytest.mark.parametrize("k", [1, 2, 64, 128, 575])
def test_visionzip_cls_counts_toward_k(k):
    feats, attn = inputs()
    cls = torch.randn(2, D)
    n_dom = max(1, round(k * VISIONZIP_DOMINANT_SHARE))
    with_cls = prune_visual_tokens("visionzip", feats, attn, k, cls_state=cls)
    assert with_cls.features.shape == (2, k, D) and with_cls.indices.shape == (2, n_dom - 1)
    assert torch.equal(with_cls.features[:, 0], cls)
    top = attn.topk(n_dom - 1, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(with_cls.indices, top)
    assert torch.equal(with_cls.features[:, 1:n_dom], torch.stack([feats[i, top[i]] for i in range(2)]))
    # no CLS state: its slot goes to the next patch by attention, still k tokens
    without = prune_visual_tokens("visionzip", feats, attn, k)
    assert without.features.shape == (2, k, D) and without.indices.shape == (2, n_dom)
    assert torch.equal(without.indices, attn.topk(n_dom, dim=-1).indices.sort(dim=-1).values)


def test_visionzip_merges_by_the_keys_given():
    feats, attn = inputs(b=1)
    cls, keys = torch.randn(1, D), torch.randn(1, N, 16)
    by_keys = prune_visual_tokens("visionzip", feats, attn, 64, cls_state=cls, keys=keys).features
    assert torch.equal(by_keys, visionzip_tokens(feats, attn, 64, cls_features=cls, keys=keys)[0])
    assert not torch.equal(by_keys, prune_visual_tokens("visionzip", feats, attn, 64, cls_state=cls).features)


# ---- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda f, a: select_visual_tokens("agile", f, a, 0), "k must be a positive integer, got 0"),
    (lambda f, a: select_visual_tokens("agile", f, a, -3), "positive integer"),
    (lambda f, a: select_visual_tokens("agile", f, a, 2.5), "positive integer"),
    (lambda f, a: select_visual_tokens("agile", f, a, None), "positive integer"),
    (lambda f, a: select_visual_tokens("nope", f, a, 8), r"Unknown pruning method 'nope'; known: agile, "),
    (lambda f, a: select_visual_tokens("fastervlm", f, None, 8), "'fastervlm' needs the CLS attention row"),
    (lambda f, a: prune_visual_tokens("visionzip", f, None, 8), "'visionzip' needs the CLS attention row"),
    (lambda f, a: select_visual_tokens("agile", f, a[:, :10], 8), r"attention must be \[B, N\]"),
    (lambda f, a: select_visual_tokens("divprune", f, a[:1], 8), r"attention must be \[B, N\]"),
    (lambda f, a: select_visual_tokens("agile", f[0], a, 8), r"features must be a floating-point tensor \[B, N, D\]"),
    (lambda f, a: select_visual_tokens("agile", f.long(), a, 8), "features must be a floating-point"),
    (lambda f, a: select_visual_tokens("agile", f, a, 8, tau=0.3), r"'agile' takes no option tau; its options: "
                                                                     r"erank_avg, tau_max, tau_step"),
    (lambda f, a: select_visual_tokens("fastervlm", f, a, 8, tau_max=0.3), "'fastervlm' takes no option tau_max"),
    (lambda f, a: select_visual_tokens("mix", f, a, 8, complexity_rule="odd"), "--complexity-rule must be one of"),
    (lambda f, a: select_visual_tokens("mix", f, a, 8, attention_share=1.5), "--attention-share must be <= 1.0"),
    (lambda f, a: select_visual_tokens("agile", f, a, 8, tau_max=0), "--tau-max must be > 0"),
    (lambda f, a: select_visual_tokens("agile", f, a, 8, erank_avg=-1), "--erank-avg must be > 0"),
    (lambda f, a: select_visual_tokens("mix", f, a, 8, share_min=0.8, share_max=0.2), "share-min"),
    (lambda f, a: select_visual_tokens("vispruner", f, a, 8), "needs the tower's select-layer states"),
    (lambda f, a: select_visual_tokens("fastv", f, a, 8), "inside the language model"),
    (lambda f, a: prune_visual_tokens("fastv", f, a, 8), "inside the language model"),
    (lambda f, a: select_visual_tokens("visionzip", f, a, 8), "builds new tokens before the projector"),
    (lambda f, a: prune_visual_tokens("agile", f, a, 8, cls_state=f[:, 0]), "'agile' takes no option cls_state"),
    (lambda f, a: prune_visual_tokens("visionzip", f, a, 8, cls_state=f[0]), r"cls_state must be \[B, D\]"),
])
def test_bad_input_is_a_one_line_value_error(call, match):
    feats, attn = inputs()
    with pytest.raises(ValueError, match=match) as e:
        call(feats, attn)
    assert "\n" not in str(e.value)
