"""The pruning methods as pure tensor functions: invariants, reference rules, metrics, errors."""
import math

import pytest
import torch

from llava.pruning import METHODS, agile_reference_loop, attention_entropy, effective_rank, fastv_select, \
    prune_visual_tokens, select_visual_tokens
from llava.pruning.methods import cosine_distance

SELECTORS = sorted(m for m, spec in METHODS.items() if not spec.in_llm and not spec.merges)
N, D = 576, 96


def inputs(b=2, regime="complex", seed=0, n=N, d=D):
    g = torch.Generator().manual_seed(seed)
    if regime == "simple":  # a few directions + small noise: low effective rank
        feats = torch.randn(b, n, 6, generator=g) @ torch.randn(6, d, generator=g) + 0.2 * torch.randn(b, n, d, generator=g)
    else:
        feats = torch.randn(b, n, d, generator=g)
    attn = torch.softmax(3 * torch.randn(b, n, generator=g), dim=-1)
    return feats, attn


@pytest.mark.parametrize("method", SELECTORS)
@pytest.mark.parametrize("k", [1, 32, 64, 575])
def test_exactly_k_ascending_unique(method, k):
    feats, attn = inputs()
    idx = select_visual_tokens(method, feats, attn, k)
    assert idx.shape == (2, k) and idx.dtype == torch.long
    assert (idx[:, 1:] > idx[:, :-1]).all() and idx.min() >= 0 and idx.max() < N


@pytest.mark.parametrize("method", SELECTORS + ["none"])
def test_k_at_least_n_keeps_everything(method):
    feats, attn = inputs()
    for k in (N, N + 10):
        kept, idx = prune_visual_tokens(method, feats, attn, k)
        assert kept is feats and torch.equal(idx[0], torch.arange(N))


@pytest.mark.parametrize("method", SELECTORS)
def test_batch_equals_single_and_deterministic(method):
    feats, attn = inputs(b=3, seed=1)
    batch = select_visual_tokens(method, feats, attn, 64)
    for i in range(3):
        assert torch.equal(batch[i], select_visual_tokens(method, feats[i : i + 1], attn[i : i + 1], 64)[0])
    assert torch.equal(batch, select_visual_tokens(method, feats, attn, 64))


@pytest.mark.parametrize("method", SELECTORS)
def test_half_precision_inputs_select_like_float32(method):
    feats, attn = inputs(seed=2)
    f16, a16 = feats.half(), attn.half()
    assert torch.equal(select_visual_tokens(method, f16, a16, 64),
                       select_visual_tokens(method, f16.float(), a16.float(), 64))


def test_fastervlm_is_top_k_attention():
    feats, attn = inputs()
    idx = select_visual_tokens("fastervlm", feats, attn, 50)
    assert torch.equal(idx, attn.topk(50, dim=-1).indices.sort(dim=-1).values)


def divprune_by_hand(x, k):
    """Max-min diversity written plainly: O(k^2 n) with Python lists."""
    xn = x / x.norm(dim=-1, keepdim=True)
    dist = (1 - xn @ xn.T).tolist()
    n = len(dist)
    nearest = [min(dist[i][j] for i in range(n) if i != j) for j in range(n)]
    chosen = [max(range(n), key=lambda j: (nearest[j], -j))]
    while len(chosen) < k:
        best = max((j for j in range(n) if j not in chosen), key=lambda j: (min(dist[s][j] for s in chosen), -j))
        chosen.append(best)
    return sorted(chosen)


def test_divprune_matches_the_max_min_rule():
    feats, _ = inputs(b=1, n=120, d=16, seed=3)
    assert select_visual_tokens("divprune", feats, None, 12)[0].tolist() == divprune_by_hand(feats[0], 12)


@pytest.mark.parametrize("regime", ["simple", "complex"])
@pytest.mark.parametrize("k", [32, 64, 128, 192])
def test_agile_matches_the_per_token_loop(regime, k):
    feats, attn = inputs(b=2, regime=regime, seed=k)
    assert torch.equal(select_visual_tokens("agile", feats, attn, k), agile_reference_loop(feats, attn, k))


def test_agile_suppresses_near_duplicates_and_backfills():
    # tokens 0..3 are copies of one vector (0 has the top attention), 4..7 are distinct directions
    base = torch.eye(8)[None]
    feats = torch.cat([base[:, :1].expand(1, 4, 8), base[:, 1:5]], dim=1)
    attn = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]])
    # duplicates are at distance 0 < tau_1: kept 0, then 4, 5, 6 (7 tokens asked -> backfill 1, 2, 3 by attention)
    assert select_visual_tokens("agile", feats, attn, 4, erank_avg=1.0)[0].tolist() == [0, 4, 5, 6]
    assert select_visual_tokens("agile", feats, attn, 6, erank_avg=1.0)[0].tolist() == [0, 1, 4, 5, 6, 7]


def test_agile_threshold_grows_with_attention_rank():
    """Two pairs at cosine distance 0.05: the pair at ranks 1-2 (tau_1 = 0.01) both stay; of the pair at
    ranks 10-11 (tau_10 = 0.10) the second is suppressed and the last filler takes its place."""
    theta = math.acos(1 - 0.05)
    e = torch.eye(16)
    a1, a2 = e[0], math.cos(theta) * e[0] + math.sin(theta) * e[1]
    b1, b2 = e[2], math.cos(theta) * e[2] + math.sin(theta) * e[3]
    feats = torch.stack([a1, a2] + [e[4 + i] for i in range(7)] + [b1, b2, e[11]])[None]  # 12 tokens
    attn = torch.linspace(1.0, 0.5, 12)[None]  # attention rank = position
    ratio_one = effective_rank(feats[0]).item()  # erank_avg = erank: tau_i = 0.01 * i
    idx = select_visual_tokens("agile", feats, attn, 11, erank_avg=ratio_one)[0].tolist()
    assert idx == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
    tiny = select_visual_tokens("agile", feats, attn, 11, erank_avg=ratio_one * 100)[0].tolist()
    assert tiny == list(range(11))  # thresholds 100x smaller: nothing suppressed, plain attention order


def test_effective_rank_known_matrices():
    # orthogonal rows around a zero mean: a regular simplex in R^n has n+1 points with equal singular values
    n = 6
    simplex = torch.eye(n + 1) - 1.0 / (n + 1)  # centred already, rank n, all non-zero singular values equal
    assert effective_rank(simplex).item() == pytest.approx(n, rel=1e-4)
    rank1 = torch.arange(1.0, 11.0)[:, None] * torch.randn(1, 32)
    assert effective_rank(rank1).item() == pytest.approx(1.0, abs=1e-2)  # float32 eigvalsh noise
    batch = torch.stack([simplex[:, :7], torch.eye(7)])
    assert effective_rank(batch).shape == (2,)


def test_attention_entropy():
    uniform = torch.full((2, 576), 0.001)
    assert torch.allclose(attention_entropy(uniform), torch.full((2,), math.log(576)))
    onehot = torch.zeros(1, 576)
    onehot[0, 7] = 0.3
    assert attention_entropy(onehot).item() == pytest.approx(0.0, abs=1e-6)


def count_top_attention(idx, attn, k):
    top = set(attn.topk(k).indices.tolist())
    return len(top & set(idx.tolist()))


@pytest.mark.parametrize("method,option", [("mix", "attention_share"), ("vispruner", "important_ratio")])
def test_hybrid_rules_move_the_attention_share_with_erank(method, option):
    k = 64
    simple, attn = inputs(b=1, regime="simple", seed=5)
    low, high = effective_rank(simple).item(), effective_rank(inputs(b=1, seed=5)[0]).item()
    assert low < high
    shares = {}
    for rule in ("fixed", "adaptive", "inverse"):
        for name, erank_avg in (("simple", high), ("complex", low)):
            idx = select_visual_tokens(method, simple, attn, k, complexity_rule=rule, erank_avg=erank_avg,
                                       **{option: 0.5})[0]
            shares[rule, name] = count_top_attention(idx, attn[0], k)
    # the same image looks simple next to a high erank_avg and complex next to a low one
    assert shares["adaptive", "simple"] > shares["adaptive", "complex"]
    assert shares["inverse", "simple"] < shares["inverse", "complex"]
    assert shares["fixed", "simple"] == shares["fixed", "complex"]


def test_random_is_seeded():
    feats, attn = inputs()
    a = select_visual_tokens("random", feats, None, 64, seed=1)
    assert torch.equal(a, select_visual_tokens("random", feats, None, 64, seed=1))
    assert not torch.equal(a, select_visual_tokens("random", feats, None, 64, seed=2))


def test_fastv_select_top_k():
    att = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0]])
    assert fastv_select(att, 2).tolist() == [[1, 3]]


def test_cosine_distance_is_zero_on_the_diagonal():
    feats, _ = inputs(b=1)
    assert cosine_distance(feats)[0].diagonal().abs().max() < 1e-5


@pytest.mark.parametrize("call,match", [
    (lambda f, a: select_visual_tokens("agile", f, a, 0), "positive integer"),
    (lambda f, a: select_visual_tokens("agile", f, a, -3), "positive integer"),
    (lambda f, a: select_visual_tokens("nope", f, a, 8), "Unknown pruning method 'nope'"),
    (lambda f, a: select_visual_tokens("fastervlm", f, None, 8), "needs the CLS attention"),
    (lambda f, a: select_visual_tokens("agile", f, a[:, :10], 8), "attention must be"),
    (lambda f, a: select_visual_tokens("agile", f[0], a, 8), "features must be"),
    (lambda f, a: select_visual_tokens("agile", f, a, 8, tau=0.3), "Unknown pruning option"),
    (lambda f, a: select_visual_tokens("mix", f, a, 8, complexity_rule="odd"), "complexity_rule"),
    (lambda f, a: select_visual_tokens("mix", f, a, 8, attention_share=1.5), "attention_share"),
    (lambda f, a: select_visual_tokens("fastv", f, a, 8), "inside the language model"),
])
def test_bad_options_are_clear_errors(call, match):
    feats, attn = inputs()
    with pytest.raises(ValueError, match=match):
        call(feats, attn)


@pytest.mark.parametrize("k", [16, 64, 200])
def test_vectorised_walk_equals_per_token_walk_on_clustered_tokens(k):
    from llava.pruning.methods import DEFAULT_OPTIONS, agile_inputs, agile_walk, agile_walk_loop

    g = torch.Generator().manual_seed(k)
    centres = torch.randn(12, 64, generator=g)
    feats = (centres[torch.randint(0, 12, (2, N), generator=g)] + 0.15 * torch.randn(2, N, 64, generator=g))
    attn = torch.rand(2, N, generator=g)
    _, dist, tau = agile_inputs(feats, attn, **DEFAULT_OPTIONS)
    fast, slow = agile_walk(dist, tau, k), agile_walk_loop(dist, tau, k)
    assert torch.equal(fast, slow) and (fast.sum(-1) == k).all()


def test_visionzip_dominant_and_contextual_by_hand():
    from llava.pruning import visionzip_merge

    # CLS + 8 patches, 2-d states; keys put patches {1,2,3,4} near (1,0) and {5,6,7,8} near (0,1)
    hidden = torch.arange(9 * 2, dtype=torch.float32).view(1, 9, 2)
    keys = torch.tensor([[0, 0], [1, 0], [1, .1], [.9, 0], [1, .2], [0, 1], [.1, 1], [0, .9], [.2, 1]])[None].float()
    attention = torch.tensor([[.1, .9, .2, .3, .4, .5, .6, .8]])  # patch j+1 has attention[j]; top: patches 2, 8
    out = visionzip_merge(hidden, attention, keys, k=5, dominant=3)  # CLS + 2 dominant, 2 contextual
    assert out.shape == (1, 5, 2)
    assert torch.equal(out[0, :3], hidden[0, [0, 2, 8]])  # CLS first, then dominant patches in raster order
    # the rest in raster order: 1,3,4,5,6,7 -> step 3 -> targets 1 and 5; 3,4 join 1; 6,7 join 5
    torch.testing.assert_close(out[0, 3], hidden[0, 1] + hidden[0, [3, 4]].mean(0))
    torch.testing.assert_close(out[0, 4], hidden[0, 5] + hidden[0, [6, 7]].mean(0))


def test_visionzip_has_no_index_selection():
    feats, attn = inputs()
    with pytest.raises(ValueError, match="merges tokens"):
        select_visual_tokens("visionzip", feats, attn, 8)
