"""PruMerge / PruMerge+, HoloV and FoPru: hand-checked cases, official outputs, invariants.

The "official" lists below were produced once by running the official selection functions on the same
seeded inputs (42Shawn/LLaVA-PruMerge @ 097c041 `CLIPVisionTower.token_prune_merge_advanced(_plus)` on a
mock tower whose layer-23 q/k hooks return our q, k and whose hidden_states[-2] are our states, with the
hard-coded 575 replaced by N - 1 for N = 64; obananas/HoloV @ 1d2e65e `HoloV(...)`, output rows mapped
back to input indices, -1 = a zero pad row; dongxianzhe/hydrainfer @ d4d5f4f `focal_prunning(..., "rank")`
and `FocalPrunning(2.5 / 8, "row")` on the per-head pre-softmax logits q k^T / sqrt(head_dim)), all on CPU
in float32. The tests do not need those repositories.
"""
import math

import pytest
import torch

from llava.pruning.methods.fopru import focal_significance, fopru
from llava.pruning.methods.holov import crop_allocation, crop_layout, holov
from llava.pruning.methods.prumerge import iqr_outlier_count, last_layer_cls_attention, prumerge, prumerge_plus
from llava.pruning.registry import METHODS


# ---- helpers -------------------------------------------------------------------------------------
def qk_for_weights(weights, cls_weight=1.0, dim=16):
    """q, k [1, 1+N, dim] whose PruMerge attention (one dim-wide head, scale dim^-0.5) is
    weights / (cls_weight + sum weights): q_cls = sqrt(dim) e_0, so q_cls . k_j / sqrt(dim) = k_j[0] =
    log(weight_j). The other key coordinates are spread so the keys differ."""
    n = len(weights)
    logw = torch.log(torch.tensor([cls_weight] + list(weights), dtype=torch.float32))
    q = torch.zeros(1, n + 1, dim)
    q[0, 0, 0] = math.sqrt(dim)
    k = torch.randn(1, n + 1, dim, generator=torch.Generator().manual_seed(5))
    k[0, :, 0] = logw
    return q, k


HAND_WEIGHTS = [1.0] * 16
for _i, _w in ((3, 10.0), (7, 10.0), (12, 10.0), (5, 2.0)):
    HAND_WEIGHTS[_i] = _w  # total with CLS weight 1: 45; IQR outliers: 3, 7, 12 (10/45) and 5 (2/45)


# ---- PruMerge / PruMerge+ ------------------------------------------------------------------------
def test_prumerge_attention_hand_case():
    # scores k_j[0] = 0, log 2, log 4 over (CLS, p0, p1): softmax = 1/7, 2/7, 4/7; CLS column dropped
    q = torch.tensor([[[2.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    k = torch.tensor([[[0.0, 1, 0, 0], [math.log(2), 0, 1, 0], [math.log(4), 0, 0, 1]]])
    assert torch.allclose(last_layer_cls_attention(q, k), torch.tensor([[2 / 7, 4 / 7]]))


def test_iqr_count_hand_case():
    # sorted: twelve 1s, 2, 10, 10, 10. Q1 (pos 3.75) = 1, Q3 (pos 11.25) = 1 + 0.25 * (2 - 1) = 1.25,
    # fence = 1.25 + 1.5 * 0.25 = 1.625: four values above it
    a = torch.tensor([HAND_WEIGHTS, [1.0] * 16, [1.0] * 15 + [1.7]])
    assert iqr_outlier_count(a).tolist() == [4, 0, 1]


def test_prumerge_adaptive_hand_case():
    # N = 16: each centre merges min(32, N - 1) = 15 neighbours, i.e. every other token. States x_j = e_j,
    # so centre i = e_i + sum_{j != i} a_j e_j and the extra token = sum over non-centres of a_j e_j.
    q, k = qk_for_weights(HAND_WEIGHTS)
    a = torch.tensor(HAND_WEIGHTS) / 45
    x = torch.eye(16)[None]
    tokens, idx = prumerge(x, None, None, last_qk=(q, k, 1), prumerge_order="official")
    assert idx[0].tolist() == [3, 7, 12, 5]  # the 4 outliers, by attention descending, ties to the lower index
    centre = lambda i: a.clone().index_fill_(0, torch.tensor([i]), 1.0)  # noqa: E731
    extra = a.clone().index_fill_(0, torch.tensor([3, 7, 12, 5]), 0.0)
    expected = torch.stack([centre(3), centre(7), centre(12), centre(5), extra])
    assert torch.allclose(tokens[0], expected, atol=1e-6)
    tokens_r, idx_r = prumerge(x, None, None, last_qk=(q, k, 1))  # default: raster order, extra last
    assert idx_r[0].tolist() == [3, 5, 7, 12]
    assert torch.allclose(tokens_r[0], expected[[0, 3, 1, 2, 4]], atol=1e-6)


def test_prumerge_plus_adaptive_hand_case():
    # 4 outliers of 16: step = int(1 / (4/16)) = 4, s = int(4/3) = 1, grid 0..14 (N - 1 = 15 excluded):
    # the 11 grid tokens not already kept are appended ascending; only token 15 is left for the extra token
    q, k = qk_for_weights(HAND_WEIGHTS)
    a = torch.tensor(HAND_WEIGHTS) / 45
    tokens, idx = prumerge_plus(torch.eye(16)[None], None, None, last_qk=(q, k, 1), prumerge_order="official")
    assert idx[0].tolist() == [3, 7, 12, 5, 0, 1, 2, 4, 6, 8, 9, 10, 11, 13, 14]
    assert tokens[0].shape == (16, 16)
    assert torch.allclose(tokens[0][-1], a[15] * torch.eye(16)[15])
    _, idx_r = prumerge_plus(torch.eye(16)[None], None, None, last_qk=(q, k, 1))
    assert idx_r[0].tolist() == list(range(15))


def test_prumerge_fixed_k_hand_case():
    q, k = qk_for_weights(HAND_WEIGHTS)
    x = torch.eye(16)[None]
    tokens, idx = prumerge(x, None, 4, last_qk=(q, k, 1))  # k - 1 = 3 centres by attention + the extra token
    assert tokens.shape == (1, 4, 16) and idx.tolist() == [[3, 7, 12]]
    # PruMerge+ k = 6: ceil(5/2) = 3 by attention (3, 7, 12), then 2 evenly spaced among the other 13
    # (raster: 0 1 2 4 5 6 8 9 10 11 13 14 15) at positions (2j + 1) * 13 // 4 = 3, 9 -> tokens 4, 11
    tokens, idx = prumerge_plus(x, None, 6, last_qk=(q, k, 1))
    assert tokens.shape == (1, 6, 16) and idx.tolist() == [[3, 4, 7, 11, 12]]
    tokens, idx = prumerge_plus(x, None, 6, last_qk=(q, k, 1), prumerge_order="official")
    assert idx.tolist() == [[3, 7, 12, 4, 11]]
    a = torch.tensor(HAND_WEIGHTS) / 45
    assert torch.allclose(tokens[0, -1], a.index_fill(0, idx[0], 0.0))  # extra = the non-centres' weighted sum
    one, idx1 = prumerge_plus(x, None, 1, last_qk=(q, k, 1))  # k = 1: the extra token alone
    assert idx1.shape == (1, 0) and torch.allclose(one[0, 0], a)


# Official outputs, N = 64, C = 32: states_full, q, k = randn(1, 65, 32) x 3 from manual_seed(seed); the
# official's kept idx (its order) and the sum over C of each output token (the extra token last).
PRUMERGE_OFFICIAL = {
    (0, "plus"): ([47, 24, 20, 39, 11, 41, 1, 0, 3, 6, 9, 12, 15, 18, 21, 27, 30, 33, 36, 42, 45, 48, 51, 54, 57, 60],
                  [-4.0894, -12.00401, -3.68427, 5.99122, 12.39879, -1.94244, 0.29877, 5.59089, -2.95496, -0.09735,
                   4.53666, 8.14911, 1.66324, -2.08142, 0.68389, 1.60645, 0.61571, -4.32467, 8.28917, 5.16489, 3.36473,
                   -3.98585, 1.87136, 6.91818, -0.91331, 6.28913, -0.00733]),
    (0, "plain"): ([47, 24, 20, 39, 11, 41, 1],
                   [-4.0894, -12.00401, -3.68427, 5.99122, 12.39879, -1.94244, 0.29877, 0.35288]),
    (1, "plus"): ([29, 47, 38, 46, 24, 51, 5, 36, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 26, 28, 30, 32, 34, 40,
                   42, 44, 48, 50, 52, 54, 56, 58, 60, 62],
                  [10.53759, 3.36393, 5.38052, 2.63925, 6.46577, 1.52422, 10.24566, 1.84719, 5.68508, 7.42871, 8.62586,
                   2.10969, 3.18049, 0.61038, 1.67592, -3.4159, 6.11845, -1.71798, 3.07444, 5.2652, -4.2236, -9.08965,
                   9.81369, 4.11864, 6.83611, 3.35048, 14.02101, 1.97076, -4.22254, 0.0491, -7.52188, -5.70612, 0.98537,
                   -0.25915, -11.65938, 13.25582, 0.71247]),
    (1, "plain"): ([29, 47, 38, 46, 24, 51, 5, 36],
                   [10.53759, 3.36393, 5.38052, 2.63925, 6.46577, 1.52422, 10.24566, 1.84719, 0.98389]),
}


def prumerge_inputs(seed, b=1, n=64, c=32):
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(b, n + 1, c, generator=g)
    return full[:, 1:], torch.randn(b, n + 1, c, generator=g), torch.randn(b, n + 1, c, generator=g)


@pytest.mark.parametrize("seed,variant", sorted(PRUMERGE_OFFICIAL))
def test_prumerge_matches_official_outputs(seed, variant):
    states, q, k = prumerge_inputs(seed)
    fn = prumerge_plus if variant == "plus" else prumerge
    tokens, idx = fn(states, None, None, last_qk=(q, k, 4), prumerge_order="official")
    official_idx, official_sums = PRUMERGE_OFFICIAL[(seed, variant)]
    assert idx[0].tolist() == official_idx
    assert torch.allclose(tokens[0].sum(dim=-1), torch.tensor(official_sums), atol=2e-4)


@pytest.mark.parametrize("fn", [prumerge, prumerge_plus])
def test_prumerge_invariants(fn):
    states, q, k = prumerge_inputs(3, b=3, n=100, c=24)
    # adaptive: per-image lists, count = IQR outliers (+ grid), batch == one image at a time
    tokens, idx = fn(states, None, None, last_qk=(q, k, 4))
    counts = iqr_outlier_count(last_layer_cls_attention(q, k)).tolist()
    for i in range(3):
        one_t, one_i = fn(states[i:i + 1], None, None, last_qk=(q[i:i + 1], k[i:i + 1], 4))
        assert torch.equal(idx[i], one_i[0]) and torch.allclose(tokens[i], one_t[0], atol=1e-6)
        assert tokens[i].shape == (len(idx[i]) + 1, 24)
        assert idx[i].tolist() == sorted(set(idx[i].tolist()))  # raster order, distinct
        if fn is prumerge:
            assert len(idx[i]) == counts[i]
        else:
            assert len(idx[i]) >= counts[i]
    # fixed k: exactly k tokens, deterministic, batch == one at a time, dtype kept
    for kk in (1, 2, 3, 17, 64, 99):
        t, i = fn(states, None, kk, last_qk=(q, k, 4))
        assert t.shape == (3, kk, 24) and i.shape == (3, kk - 1)
        assert all(len(set(row)) == kk - 1 for row in i.tolist())
        t2, i2 = fn(states, None, kk, last_qk=(q, k, 4))
        assert torch.equal(t, t2) and torch.equal(i, i2)
        t1, i1 = fn(states[1:2], None, kk, last_qk=(q[1:2], k[1:2], 4))
        assert torch.equal(i1[0], i[1]) and torch.allclose(t1[0], t[1], atol=1e-6)
    half, _ = fn(states.half(), None, 10, last_qk=(q.half(), k.half(), 4))
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    same, all_idx = fn(states, None, 100, last_qk=(q, k, 4))  # k >= N: nothing pruned
    assert same is states and all_idx.tolist() == [list(range(100))] * 3


def test_prumerge_plus_no_outlier_and_dense_outliers():
    # no outlier (the official divides by zero): treated as one; plain PruMerge keeps just the extra token
    q, k = qk_for_weights([1.0] * 16)
    tokens, idx = prumerge(torch.eye(16)[None], None, None, last_qk=(q, k, 1))
    assert idx[0].numel() == 0 and tokens[0].shape == (1, 16)
    tokens, idx = prumerge_plus(torch.eye(16)[None], None, None, last_qk=(q, k, 1))
    # c = 1: step 16, s = 5, grid 0, 5, 10; token 0 (all tie) is the top one
    assert idx[0].tolist() == [0, 5, 10] and tokens[0].shape == (4, 16)


# ---- HoloV ---------------------------------------------------------------------------------------
def test_holov_crop_layout():
    crop_id, sizes, starts = crop_layout(10, 4)
    assert sizes.tolist() == [3, 3, 2, 2] and starts.tolist() == [0, 3, 6, 8]
    assert crop_id.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert crop_layout(5, 16)[1].tolist() == [1] * 5  # empty crops are dropped
    assert crop_allocation(torch.tensor([[20.0, 10.0, 6.0, 4.0]]), 5).tolist() == [[3, 2, 0, 0]]


@pytest.mark.parametrize("alpha", [0.0, 0.09])
def test_holov_hand_case(alpha):
    # 4 crops of 4; attention sums 20, 10, 6, 4 (/40) -> w k = 2.5, 1.25, 0.75, 0.5 at k = 5: floors 2, 1, 0, 0,
    # the 2 left go to the crops of largest w -> 3, 2, 0, 0. Crop 0 keeps 0, 1, 2; crop 1 keeps 4, 5. Token 8
    # (the 2nd largest attention overall) is dropped: its crop gets nothing.
    a = torch.tensor([[10, 5, 4, 1, 4, 3, 2, 1, 5.5, 0.2, 0.2, 0.1, 1, 1, 1, 1]]) / 40
    x = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))
    assert holov(x, a, 5, holov_crops=4, holov_alpha=alpha).tolist() == [[0, 1, 2, 4, 5]]


def test_holov_overflow_is_filled_by_attention():
    # crop 0 holds 400 of 415: floor(6 * 400/415) = 5, and the one left also goes to crop 0 -> 6 > its 4
    # tokens. The official pads 2 zero vectors; here the 2 tokens of largest attention left: 10, then 5.
    a = torch.tensor([[100, 100, 100, 100, 1, 2, 1, 1, 1, 1, 3, 1, 1, 1, 1, 1.0]])
    x = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))
    assert holov(x, a, 6, holov_crops=4).sort().values.tolist() == [[0, 1, 2, 3, 5, 10]]


# Official outputs, N = 64, D = 32, k = 16: x = randn(1, 64, 32), a = softmax(randn(1, 65) * 1.5)[:, 1:]
# from manual_seed(seed); the official's output rows mapped back to input indices (-1: a zero pad row).
HOLOV_OFFICIAL = {
    (0, 16): [15, 16, 17, 30, 28, 31, 34, 35, 33, 36, 42, 46, 47, 53, 55, 57],
    (0, 5): [0, 16, 15, 34, 30, 35, 36, 26, 28, 46, 42, 39, 47, 53, 57, 55],
    (1, 16): [12, 13, 14, 15, 18, 17, 16, 25, 27, 32, 34, 42, 40, 45, 47, -1],
    (1, 5): [5, 13, 18, 25, 17, 16, 15, 23, 19, 29, 32, 45, 42, 40, 41, 63],
}


@pytest.mark.parametrize("seed,crops", sorted(HOLOV_OFFICIAL))
def test_holov_matches_official_outputs(seed, crops):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 64, 32, generator=g)
    a = torch.softmax(torch.randn(1, 65, generator=g) * 1.5, -1)[:, 1:]
    ours = holov(x, a, 16, holov_crops=crops)[0].tolist()
    official = [i for i in HOLOV_OFFICIAL[(seed, crops)] if i >= 0]
    assert len(ours) == 16 and len(set(ours)) == 16
    if len(official) == 16:
        assert sorted(ours) == sorted(official)
    else:  # the official padded: ours = its real tokens + the fill by attention
        assert set(official) <= set(ours)
        fill = sorted(set(ours) - set(official))
        rest = [i for i in torch.argsort(a[0], descending=True, stable=True).tolist() if i not in official]
        assert fill == sorted(rest[:16 - len(official)])


def test_holov_invariants():
    g = torch.Generator().manual_seed(4)
    x, a = torch.randn(3, 90, 16, generator=g), torch.softmax(torch.randn(3, 91, generator=g), -1)[:, 1:]
    for kk in (1, 5, 16, 45, 89):
        idx = holov(x, a, kk, holov_crops=7)
        assert idx.shape == (3, kk) and all(len(set(r)) == kk for r in idx.tolist())
        assert torch.equal(idx, holov(x, a, kk, holov_crops=7))
        assert torch.equal(idx[2], holov(x[2:], a[2:], kk, holov_crops=7)[0])
    assert holov(x, a, 90).tolist() == [list(range(90))] * 3
    assert torch.equal(holov(x, a, 4, holov_crops=200), holov(x, a, 4, holov_crops=90))


# ---- FoPru ---------------------------------------------------------------------------------------
def fopru_qk(col_values=None, row_values=None):
    """q, k [1, 17, 2] (one head, head_dim 2) with logits L_ij = q_i . k_j / sqrt(2) over 16 patches:
    col_values set k_j = (v_j, 0) and every patch query (sqrt 2, 0), so L_ij = v_j (column means v, row
    means constant); row_values set q_i = (sqrt 2 v_i, 0) and every patch key (1, 0), so L_ij = v_i."""
    q, k = torch.zeros(1, 17, 2), torch.zeros(1, 17, 2)
    q[0, 0], k[0, 0] = torch.tensor([5.0, 5.0]), torch.tensor([-5.0, 3.0])  # CLS: must not matter
    if col_values is not None:
        q[0, 1:, 0] = math.sqrt(2)
        k[0, 1:, 0] = torch.tensor(col_values)
    else:
        q[0, 1:, 0] = math.sqrt(2) * torch.tensor(row_values)
        k[0, 1:, 0] = 1.0
    return q, k


VALUES = [0.0, 9, 1, 2, 3, 8, 4, 0, 7, 7, 1, 1, 0, 6, 5, 0]  # 4 x 4 grid; row sums 12, 15, 16, 11


def test_fopru_hand_cases():
    x = torch.zeros(1, 16, 4)
    q, k = fopru_qk(col_values=VALUES)
    assert torch.allclose(focal_significance((q, k, 1)), torch.tensor([VALUES]))
    assert fopru(x, None, 4, select_qk=(q, k, 1)).tolist() == [[1, 5, 8, 9]]  # 9, 8, 7, 7
    assert fopru(x, None, 5, select_qk=(q, k, 1)).tolist() == [[1, 5, 8, 9, 13]]
    assert fopru(x, None, 8, select_qk=(q, k, 1), fopru_strategy="row").tolist() == [list(range(4, 12))]
    # 6 = one row (row 2: sum 16) + the 2 best tokens outside it: 1 (9), 5 (8)
    assert fopru(x, None, 6, select_qk=(q, k, 1), fopru_strategy="row").tolist() == [[1, 5, 8, 9, 10, 11]]
    q, k = fopru_qk(row_values=VALUES)  # the row mean varies now
    assert torch.allclose(focal_significance((q, k, 1)), torch.tensor([VALUES]))
    assert fopru(x, None, 4, select_qk=(q, k, 1)).tolist() == [[1, 5, 8, 9]]
    q, k = fopru_qk(col_values=[1.0] * 16)  # no variance anywhere: all ties -> the lowest indices
    assert fopru(x, None, 3, select_qk=(q, k, 1)).tolist() == [[0, 1, 2]]


def head_mean_logits(q, k, heads):
    """HydraInfer's map, built explicitly: per-head q k^T / sqrt(head_dim), head mean, patch block."""
    b, t, c = q.shape
    qh = q.view(b, t, heads, c // heads).transpose(1, 2)
    kh = k.view(b, t, heads, c // heads).transpose(1, 2)
    return ((qh / math.sqrt(c // heads)) @ kh.transpose(-1, -2)).mean(1)[:, 1:, 1:]


# Official outputs, N = 64, C = 32, 4 heads, k = 16: q, k = randn(1, 65, 32) x 2 from manual_seed(seed).
FOPRU_OFFICIAL = {  # seed: (significance used, rank, row with 2 rows)
    0: ("row", [8, 9, 12, 20, 26, 30, 32, 40, 41, 47, 48, 49, 56, 58, 59, 61],
        list(range(40, 48)) + list(range(56, 64))),
    1: ("col", [2, 4, 5, 12, 15, 19, 21, 22, 24, 34, 37, 41, 44, 53, 60, 61], list(range(0, 8)) + list(range(40, 48))),
}


@pytest.mark.parametrize("seed", sorted(FOPRU_OFFICIAL))
def test_fopru_matches_official_outputs(seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 65, 32, generator=g), torch.randn(1, 65, 32, generator=g)
    kind, rank, rows = FOPRU_OFFICIAL[seed]
    logits = head_mean_logits(q, k, 4)[0]
    assert torch.allclose(focal_significance((q, k, 4))[0], logits.mean(0 if kind == "col" else 1), atol=1e-5)
    x = torch.zeros(1, 64, 8)
    assert fopru(x, None, 16, select_qk=(q, k, 4)).tolist() == [rank]
    assert fopru(x, None, 16, select_qk=(q, k, 4), fopru_strategy="row").tolist() == [rows]


def test_fopru_invariants():
    g = torch.Generator().manual_seed(7)
    q, k, x = torch.randn(3, 101, 24, generator=g), torch.randn(3, 101, 24, generator=g), torch.zeros(3, 100, 4)
    for strategy in ("rank", "row"):
        for kk in (1, 9, 10, 33, 99):
            idx = fopru(x, None, kk, select_qk=(q, k, 3), fopru_strategy=strategy)
            assert idx.shape == (3, kk) and all(r == sorted(set(r)) for r in idx.tolist())
            one = fopru(x[1:2], None, kk, select_qk=(q[1:2], k[1:2], 3), fopru_strategy=strategy)
            assert torch.equal(one[0], idx[1])
        assert fopru(x, None, 100, select_qk=(q, k, 3)).tolist() == [list(range(100))] * 3
    with pytest.raises(ValueError, match="square"):
        fopru(torch.zeros(1, 12, 4), None, 5, select_qk=(q[:1, :13], k[:1, :13], 3), fopru_strategy="row")
    with pytest.raises(ValueError, match="select_qk"):
        fopru(x, None, 5)


# ---- registration --------------------------------------------------------------------------------
def test_registered():
    pm, pmp, hv, fp = (METHODS[m] for m in ("prumerge", "prumerge_plus", "holov", "fopru"))
    assert pm.stage == pmp.stage == "pre-projector" and pm.inputs == pmp.inputs == ("last_qk",)
    assert pm.k_optional and pmp.k_optional and pm.options == pmp.options
    assert pmp.validate({}) == {"prumerge_order": "raster"}
    with pytest.raises(ValueError):
        pmp.validate({"prumerge_order": "sideways"})
    assert hv.stage == "post-projector" and hv.needs_attention and hv.validate({}) == {"holov_crops": 16,
                                                                                    "holov_alpha": 0.09}
    assert fp.stage == "post-projector" and fp.inputs == ("select_qk",) and not fp.needs_attention
    assert fp.validate({"fopru_strategy": "row"}) == {"fopru_strategy": "row"}
    assert fp.options[0].flag_name == "--fopru-strategy"
