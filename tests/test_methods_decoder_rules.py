"""The in-decoder baselines' rules (PDrop, SparseVLM / SparseVLM+, DART) as pure tensor functions and their
decoder adapters, driven by a fake `step`.

The *_OFFICIAL constants are the official code's outputs on the same deterministic inputs (`det` below):
they were computed by running, in a scratch folder outside the project, PyramidDrop's
`LlamaModel.pdrop_rank_drop` (Cooperx521/PyramidDrop @ 6444f30, with its 4.37 RMSNorm / rotary pieces),
SparseVLM's `attn_postprocess_topk` and `cluster_and_merge` plus the rater / recycling lines of
`LlamaDynamicvitModel.forward` (Gumpest/SparseVLMs branch v1.5 @ 734d900; the density jitter replaced by a
fixed one that makes the lower index denser on a tie, the rule implemented here), and the public DART LLaVA
copy of `get_retained_image_token` (keys given as [B, T, 1, H*d] so its flatten yields the clean [B, T, H*d]
layout). The same scratch runs compared the rules with the official pieces on random tensors over several
seeds (PDrop 108 row-stages, SparseVLM 180 stages incl. v2 and 60 recycling merges, DART 72 rows): identical
indices, merged tokens within 1e-5.
"""
import pytest
import torch

from llava.pruning.methods import dart as dart_mod
from llava.pruning.methods import pdrop as pdrop_mod
from llava.pruning.methods import sparsevlm as svlm
from llava.pruning.registry import METHODS


def det(shape, a, b=0.1, scale=1.0):
    """Deterministic pseudo-random values in [-scale, scale) (no RNG: the same on every torch version)."""
    n = 1
    for s in shape:
        n *= s
    x = torch.sin(torch.arange(n, dtype=torch.float64) * (12.9898 + a) + b) * 43758.5453
    return ((x - x.floor()) * 2 - 1).mul(scale).float().reshape(shape)


class Step:
    """A stand-in for the decoder hook's step object."""

    def __init__(self, **kw):
        self.calls = []
        self.__dict__.update(kw)

    def attention(self, layer, hidden, queries, per_head=False):
        self.calls.append(("attention", layer, hidden, queries))
        return self.attention_fn(layer, hidden, queries, per_head)

    def keys(self, layer, hidden):
        self.calls.append(("keys", layer, hidden))
        return self.keys_fn(layer, hidden)

    def final_norm(self, hidden):
        return hidden * 2.0  # any per-token map; cosine is scale-free


# ---- registration ------------------------------------------------------------------------------------------
def test_registered_as_decoder_methods():
    for name in ("pdrop", "sparsevlm", "sparsevlm_v2", "dart"):
        assert METHODS[name].stage == "decoder"
    assert METHODS["pdrop"].option_names == ("pdrop_layers", "pdrop_ratio")
    assert METHODS["sparsevlm"].option_names == ("sparsevlm_layers", "sparsevlm_recycle")
    assert METHODS["sparsevlm_v2"].option_names == ("sparsevlm_layers",)
    assert METHODS["dart"].option_names == ("dart_layer", "dart_pivot_image", "dart_pivot_text",
                                            "dart_official_budget")
    assert METHODS["pdrop"].validate({})["pdrop_layers"] == (2, 8, 16)
    assert METHODS["pdrop"].validate({"pdrop_ratio": None})["pdrop_ratio"] is None
    with pytest.raises(ValueError, match="increasing"):
        METHODS["pdrop"].validate({"pdrop_layers": (8, 2)})
    with pytest.raises(ValueError, match="pdrop-ratio"):
        METHODS["pdrop"].validate({"pdrop_ratio": 0.0})


# ---- PDrop -------------------------------------------------------------------------------------------------
def test_pdrop_official_default_schedule():
    counts = pdrop_mod.pdrop_counts(576, 0.5, 3)
    assert counts == [288, 144, 72]
    assert pdrop_mod.pdrop_average(576, (8, 16, 24), counts, 32) == 270.0


@pytest.mark.parametrize("k, lam, counts, avg", [(64, 0.19, [109, 20, 3], 62.9375),
                                                (128, 0.42, [241, 101, 42], 127.4375),
                                                (192, 0.56, [322, 180, 101], 191.875)])
def test_pdrop_lambda_from_k(k, lam, counts, avg):
    """lambda = the largest multiple of 0.01 with average <= K (0.19 is the maintainer's value for 64)."""
    assert pdrop_mod.pdrop_solve_ratio(k, 576, (2, 8, 16), 32) == lam
    assert pdrop_mod.pdrop_counts(576, lam, 3) == counts
    assert pdrop_mod.pdrop_average(576, (2, 8, 16), counts, 32) == avg
    above = pdrop_mod.pdrop_counts(576, round(lam + 0.01, 2), 3)
    assert pdrop_mod.pdrop_average(576, (2, 8, 16), above, 32) > k


def test_pdrop_lambda_unreachable():
    with pytest.raises(ValueError, match="smallest reachable average"):
        pdrop_mod.pdrop_solve_ratio(40, 576, (2, 8, 16), 32)


def test_pdrop_select_ties_and_order():
    att = torch.tensor([[0.1, 0.5, 0.2, 0.5, 0.0, 0.5], [0.3, 0.1, 0.3, 0.2, 0.3, 0.0]])
    assert pdrop_mod.pdrop_select(att, 2).tolist() == [[1, 3], [0, 2]]
    assert pdrop_mod.pdrop_select(att, 4).tolist() == [[1, 2, 3, 5], [0, 2, 3, 4]]


def _rope(x, pos, d):
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    ang = pos.float()[:, None, :, None] * inv
    emb = torch.cat([ang, ang], -1)
    x1, x2 = x.chunk(2, -1)
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


def _pdrop_fixture():
    c, h, d, pre, n, txt = 16, 2, 8, 3, 24, 5
    wq, wk = det((h * d, c), 0.731, 0.3, 1.5), det((h * d, c), 1.731, 0.3, 1.5)
    norm_w = 1 + 0.1 * det((c,), 1.3)
    hidden = det((1, pre + n + txt, c), 0.917, 0.2, 2.0)

    def attention_fn(layer, x, queries, per_head):
        assert queries == "last" and not per_head
        x = norm_w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        b, t, _ = x.shape
        q = (x @ wq.T).view(b, t, h, d).transpose(1, 2)
        k = (x @ wk.T).view(b, t, h, d).transpose(1, 2)
        pos = torch.arange(t)[None].expand(b, t)
        q, k = _rope(q, pos, d), _rope(k, pos, d)
        return ((q[:, :, -1:] @ k.transpose(-1, -2)) / d ** 0.5).softmax(-1, dtype=torch.float32).mean(1)

    return pre, n, txt, hidden, attention_fn


PDROP_OFFICIAL = [1, 2, 5, 8, 10, 11, 12, 14, 17, 18, 19, 20]  # pdrop_rank_drop, stage 0 of [2,4,6] / 0.5


def test_pdrop_adapter_matches_official():
    pre, n, txt, hidden, attention_fn = _pdrop_fixture()
    t = pre + n + txt
    step = Step(layer=2, hidden=hidden, previous_hidden=None, image=(pre, n), embeds=torch.zeros(1, t, 16),
                num_layers=8, attention_fn=attention_fn)
    out = pdrop_mod.pdrop(step, None, pdrop_layers=(2, 4, 6), pdrop_ratio=0.5)
    assert out["keep"].tolist() == [PDROP_OFFICIAL]
    assert out["renumber"] is True and out["insert"] is None
    assert step.calls[0][:2] == ("attention", 2) and step.calls[0][2] is hidden and step.calls[0][3] == "last"
    # batch rows are independent
    other = det((1, t, 16), 0.3, 0.6, 2.0)
    both = Step(layer=2, hidden=torch.cat([other, hidden]), image=(pre, n), embeds=torch.zeros(2, t, 16),
                num_layers=8, attention_fn=attention_fn)
    out = pdrop_mod.pdrop(both, None, pdrop_layers=(2, 4, 6), pdrop_ratio=0.5)
    assert out["keep"][1].tolist() == PDROP_OFFICIAL


def test_pdrop_adapter_stages_and_counts():
    pre, n, txt, hidden, attention_fn = _pdrop_fixture()
    t = pre + n + txt
    kw = dict(pdrop_layers=(2, 4, 6), pdrop_ratio=0.5)
    off_stage = Step(layer=3, hidden=hidden, image=(pre, n), embeds=hidden, num_layers=8)
    assert pdrop_mod.pdrop(off_stage, None, **kw) is None
    # stage 2: the span holds 12 tokens, the original 24 is read from the embeddings' length
    h12 = hidden[:, : t - 12]
    out = pdrop_mod.pdrop(Step(layer=4, hidden=h12, image=(pre, 12), embeds=hidden, num_layers=8,
                               attention_fn=attention_fn), None, **kw)
    assert out["keep"].shape == (1, 6)
    # K from --visual-token-num: lambda solved; K >= N means no pruning
    with pytest.raises(ValueError, match="visual-token-num"):
        pdrop_mod.pdrop(Step(layer=2, hidden=hidden, image=(pre, n), embeds=hidden, num_layers=8), None,
                        pdrop_layers=(2, 4, 6))
    assert pdrop_mod.pdrop(Step(layer=2, hidden=hidden, image=(pre, n), embeds=hidden, num_layers=8), 24,
                           pdrop_layers=(2, 4, 6)) is None
    with pytest.raises(ValueError, match="below the number of decoder layers"):
        pdrop_mod.pdrop(Step(layer=2, hidden=hidden, image=(pre, n), embeds=hidden, num_layers=6), None, **kw)


# ---- SparseVLM ---------------------------------------------------------------------------------------------
def test_sparsevlm_tables_and_counts():
    assert svlm.SPARSEVLM_TABLES == {64: (66, 30, 17), 96: (238, 48, 26), 128: (303, 110, 36), 192: (300, 200, 110)}
    assert svlm.SPARSEVLM_V2_TABLES == {64: (66, 34, 20), 96: (246, 54, 28), 128: (238, 108, 60),
                                        192: (300, 200, 118)}
    # kept + recycled after layers 2 / 6 / 15 (the notes' re-derivation of the official counting)
    assert svlm.sparsevlm_counts(192) == [309, 204, 113]
    assert svlm.sparsevlm_counts(128) == [312, 117, 39]
    assert svlm.sparsevlm_counts(96) == [249, 55, 27]
    assert svlm.sparsevlm_counts(64) == [82, 32, 18]
    assert svlm.sparsevlm_counts(64, recycle=False, tables=svlm.SPARSEVLM_V2_TABLES) == [66, 34, 20]


def test_sparsevlm_raters_hand():
    visual = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    text = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]])
    # softmax rows: e^2 dominates the token matching each visual row -> tokens 0 and 2 above the mean
    assert svlm.sparsevlm_raters(visual, text).tolist() == [[True, False, True, False]]


def test_sparsevlm_relevance_and_keep_hand():
    att = torch.tensor([[[0.1, 0.2, 0.3], [9.0, 9.0, 9.0], [0.3, 0.2, 0.1]]])
    raters = torch.tensor([[True, False, True]])
    rel = svlm.sparsevlm_relevance(att, raters)
    assert torch.allclose(rel, torch.tensor([[0.2, 0.2, 0.2]]))
    kept, dropped = svlm.sparsevlm_keep(torch.tensor([[0.2, 0.5, 0.2, 0.1, 0.5]]), 2)
    assert kept.tolist() == [[1, 4]] and dropped.tolist() == [[0, 2, 3]]  # ties to the lower index


def test_dpc_knn_merge_hand():
    # two groups on a line; cluster_num 2, so the density uses the nearest neighbour: 0 and 1 tie (mutual
    # nearest, 0 counts as denser), 10 and 10.5 tie (10 denser); delta(0) = max distance, delta(10) = 9.7
    x = torch.tensor([[[0.0], [0.1], [0.3], [10.0], [10.5]]])
    merged, centers, assign = svlm.dpc_knn_merge(x, 2)
    assert centers.tolist() == [[0, 3]]
    assert assign.tolist() == [[0, 0, 0, 1, 1]]
    assert torch.allclose(merged, torch.tensor([[[0.4 / 3], [10.25]]]), atol=1e-5)
    # a single cluster is the mean of everything
    assert torch.allclose(svlm.dpc_knn_merge(x, 1)[0], x.mean(1, keepdim=True), atol=1e-5)
    # rows are independent
    y = torch.cat([x.flip(1) * 3, x])
    assert torch.allclose(svlm.dpc_knn_merge(y, 2)[0][1], merged[0])


def test_rope_gravity_closed_form():
    inv = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    pq = torch.tensor([[5, 9, 40]])
    pk = torch.tensor([[0, 3, 9, 17]])
    g = svlm.rope_gravity(pq, pk, inv)
    diff = (pq[0][:, None] - pk[0][None]).double()
    expected = 2 / 8 ** 0.5 * torch.cos(diff[:, :, None] * inv.double()).sum(-1)
    assert torch.allclose(g[0].double(), expected, atol=1e-5)
    assert torch.allclose(g[0, 1, 2], torch.tensor(8 / 8 ** 0.5))  # distance 0: 2 * d/2 / sqrt(d)


def test_sparsevlm_v2_relevance_hand():
    # 3 heads, 2 text rows (both raters), 2 image columns; gravity 1 except column 1 (halves it)
    att = torch.tensor([[[[0.1, 0.1], [0.1, 0.1]], [[0.4, 0.1], [0.2, 0.3]], [[0.3, 0.3], [0.3, 0.1]]]])
    gravity = torch.tensor([[[1.0, 0.5], [1.0, 0.5]]])
    raters = torch.tensor([[True, True]])
    # corrected sums: head0 0.6, head1 1.4, head2 1.4 -> heads 1 and 2 (tie keeps both)
    rel = svlm.sparsevlm_v2_relevance(att, gravity, raters, heads=2)
    expected = torch.tensor([[(0.4 + 0.2 + 0.3 + 0.3) / 4, (0.2 + 0.6 + 0.6 + 0.2) / 4]])
    assert torch.allclose(rel, expected)
    rel1 = svlm.sparsevlm_v2_relevance(att, gravity, raters, heads=1)  # tie at 1.4 -> head 1
    assert torch.allclose(rel1, torch.tensor([[0.3, 0.4]]))


SVLM_RATERS = [0, 2, 3]
SVLM_KEPT = [15, 21, 22, 98, 127, 175, 202, 237, 266, 289, 355, 419, 446, 459, 507, 518, 521]
SVLM_MERGED = [
    [-0.307826, 0.214483, 0.326649, -0.079638, 0.014317, 0.314484, 0.430522, -0.179284],
    [-0.101566, 0.428842, -0.472704, 0.604056, -0.145794, 0.443039, 0.41311, 0.164495],
    [0.29964, -0.675484, 0.63634, -0.704727, -0.39488, -0.274535, 0.272242, 0.037349],
    [0.454739, -0.130322, -0.374441, 0.60348, -0.032975, -0.281736, 0.448426, -0.611977],
    [0.158539, 0.424668, -0.166422, 0.315928, 0.557463, -0.436564, 0.135511, 0.172074],
    [-0.304544, 0.072964, -0.295676, -0.00482, 0.12578, -0.454974, -0.514033, 0.645349],
    [0.068485, -0.140603, 0.732557, 0.519272, -0.018728, 0.567117, -0.857556, -0.226564],
    [0.135205, -0.597323, -0.505084, 0.139825, 0.514376, -0.26249, -0.609478, -0.423191],
    [0.219778, -0.375128, -0.969457, 0.817403, -0.919032, -0.595563, 0.608112, 0.689983],
    [-0.794977, -0.352322, 0.498713, -0.364329, 0.26809, 0.471931, -0.676761, 0.493382],
    [0.358944, 0.403506, -0.009213, -0.550989, 0.384379, 0.151606, -0.030645, 0.420265],
    [0.294209, -0.532305, -0.642932, -0.511141, 0.287539, 0.477243, 0.235134, -0.399822],
    [0.779312, 0.444478, 0.571906, -0.667688, -0.506159, -0.055429, -0.381908, -0.567947],
    [0.402755, -0.787951, -0.592975, 0.441174, 0.6643, 0.096222, -0.087153, 0.625621],
    [-0.201248, -0.156631, 0.522233, 0.799128, 0.236212, 0.676941, 0.445617, 0.903474],
    [0.06816, 0.288862, -0.167422, 0.429787, -0.567151, -0.415445, -0.263342, -0.223159],
    [-0.148432, -0.501877, 0.573028, 0.319666, -0.290297, -0.588015, -0.318246, -0.240069],
]


def _svlm_fixture():
    c, h, pre, n, txt = 8, 4, 3, 576, 6
    t = pre + n + txt
    emb = det((1, t, c), 0.577, 0.4, 1.0)
    logits = det((1, h, t, t), 0.0123, 0.5, 4.0).masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1),
                                                                 float("-inf"))
    probs = logits.softmax(-1)
    h_out = det((1, t, c), 0.291, 0.7, 1.0)
    return pre, n, txt, emb, probs, h_out


def test_sparsevlm_adapter_matches_official():
    pre, n, txt, emb, probs, h_out = _svlm_fixture()
    t = pre + n + txt
    assert svlm.sparsevlm_raters(emb[:, pre:pre + n], emb[:, pre + n:]).nonzero()[:, 1].tolist() == SVLM_RATERS
    h_in = torch.zeros(1, t, 8)

    def attention_fn(layer, hidden, queries, per_head):
        assert layer == 15 and hidden is h_in and not per_head
        return probs[:, :, queries].mean(1)

    step = Step(layer=16, hidden=h_out, previous_hidden=h_in, image=(pre, n), text_after_image=(pre + n, t),
                embeds=emb, attention_fn=attention_fn)
    out = svlm.sparsevlm(step, 64)  # stage 3 of K = 64: keep 17, recycle 168 dropped into 17 clusters
    assert out["keep"].tolist() == [SVLM_KEPT]
    assert out["renumber"] is True
    assert step.calls[0][3].tolist() == list(range(pre + n, t))  # every text row; raters are picked inside
    assert torch.allclose(out["insert"], torch.tensor([SVLM_MERGED]), atol=1e-5)
    no_recycle = svlm.sparsevlm(step, 64, sparsevlm_recycle=False)
    assert no_recycle["keep"].tolist() == [SVLM_KEPT] and no_recycle["insert"] is None


def test_sparsevlm_adapter_layers_k_and_batch():
    pre, n, txt, emb, probs, h_out = _svlm_fixture()
    t = pre + n + txt
    both_probs = torch.cat([probs.flip(-1).tril(), probs])

    def attention_fn(layer, hidden, queries, per_head):
        return both_probs[:, :, queries].mean(1)

    kw = dict(previous_hidden=torch.zeros(2, t, 8), image=(pre, n), text_after_image=(pre + n, t),
              embeds=torch.cat([emb.flip(1), emb]), hidden=torch.cat([h_out.flip(1), h_out]),
              attention_fn=attention_fn)
    for layer in (0, 1, 2, 4, 15, 17):
        assert svlm.sparsevlm(Step(layer=layer, **kw), 64) is None
    with pytest.raises(ValueError, match="64, 96, 128, 192"):
        svlm.sparsevlm(Step(layer=3, **kw), 100)
    assert svlm.sparsevlm(Step(layer=3, **kw), 576) is None
    out = svlm.sparsevlm(Step(layer=16, **kw), 64)
    assert out["keep"][1].tolist() == SVLM_KEPT
    assert torch.allclose(out["insert"][1], torch.tensor(SVLM_MERGED), atol=1e-5)
    first = svlm.sparsevlm(Step(layer=3, **kw), 64)
    assert first["keep"].shape == (2, 66) and first["insert"].shape == (2, 16, 8)  # 510 dropped -> 154 -> 16


def test_sparsevlm_v2_adapter():
    pre, n, txt, emb, probs, h_out = _svlm_fixture()
    t = pre + n + txt
    inv = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    pos = torch.arange(t)[None]

    def attention_fn(layer, hidden, queries, per_head):
        assert per_head and layer == 2
        return probs[:, :, queries]

    step = Step(layer=3, hidden=h_out, previous_hidden=torch.zeros(1, t, 8), image=(pre, n),
                text_after_image=(pre + n, t), embeds=emb, positions=pos, rope_inv_freq=inv,
                attention_fn=attention_fn)
    out = svlm.sparsevlm_v2(step, 64)
    assert out["keep"].shape == (1, 66) and out["insert"] is None and out["renumber"] is False
    # by hand: gravity-corrected per-head probabilities, top min(14, H) = all 4 heads, mean over raters
    q = torch.arange(pre + n, t)
    g = svlm.rope_gravity(pos[:, q], pos[:, pre:pre + n], inv)
    corrected = (probs[:, :, q, pre:pre + n] / g[:, None]).mean(1)[0]
    rel = corrected[SVLM_RATERS].mean(0)
    assert out["keep"][0].tolist() == sorted(torch.sort(rel, descending=True, stable=True).indices[:66].tolist())


# ---- DART --------------------------------------------------------------------------------------------------
def test_dart_counts():
    kept = lambda k, **kw: dart_mod.dart_kept_count(576, k, **kw)  # noqa: E731
    assert [kept(k) for k in (64, 68, 128, 132, 192, 196)] == [64, 68, 128, 132, 192, 196]
    assert dart_mod.dart_counts(68) == (4, 8, 0) and dart_mod.dart_counts(64) == (4, 7, 4)
    # the official --max_num_trunction M keeps 4 + 8 * (M // 8)
    assert [kept(m, official=True) for m in (64, 128, 192)] == [68, 132, 196]
    assert dart_mod.dart_counts(3) == (3, 0, 0)


def test_dart_set_order_matches_cpython_example():
    order = dart_mod.set_order(torch.tensor([[101, 47, 300, 59]]), torch.tensor([[640, 612, 655, 700]]))
    assert order.tolist() == [[640, 612, 101, 300, 47, 655, 59, 700]]


DART_OFFICIAL = [0, 2, 3, 5, 6, 7, 11, 12, 16, 18, 20, 23, 24, 25, 32, 33, 34, 36, 38, 39]  # M = 16, N = 40


def _dart_fixture():
    pre, n, txt = 3, 40, 6
    t = pre + n + txt
    keys = det((1, t, 12), 0.613, 0.9, 1.0) * (1 + 0.5 * det((1, t, 1), 2.71))
    states = det((1, t, 10), 0.419, 0.15, 1.0)
    return pre, n, txt, keys, states


def test_dart_select_matches_official():
    pre, n, txt, keys, states = _dart_fixture()
    img, txt_ = slice(pre, pre + n), slice(pre + n, None)
    keep = dart_mod.dart_select(keys[:, img], keys[:, txt_], states[:, img], states[:, txt_], 20, pre, pre + n)
    assert keep.tolist() == [DART_OFFICIAL]
    official = dart_mod.dart_select(keys[:, img], keys[:, txt_], states[:, img], states[:, txt_], 16, pre, pre + n,
                                    official=True)
    assert official.tolist() == [DART_OFFICIAL]


def test_dart_adapter():
    pre, n, txt, keys, states = _dart_fixture()
    t = pre + n + txt
    prev = torch.zeros(1, t, 10)

    def keys_fn(layer, hidden):
        assert layer == 1 and hidden is prev
        return keys

    step = Step(layer=2, hidden=states, previous_hidden=prev, image=(pre, n), text_after_image=(pre + n, t),
                keys_fn=keys_fn)
    out = dart_mod.dart(step, 20)
    assert out["keep"].tolist() == [DART_OFFICIAL] and out["renumber"] is False and out["insert"] is None
    assert dart_mod.dart(Step(layer=1, **{k: getattr(step, k) for k in ("hidden", "image")}), 20) is None
    assert dart_mod.dart(step, 40) is None  # K >= N: no pruning
    # exactly K for any K; the pivots are kept; rows are independent
    other = det((1, t, 12), 0.2, 0.3, 1.0)
    both = Step(layer=2, hidden=torch.cat([states.flip(1), states]), previous_hidden=prev,
                image=(pre, n), text_after_image=(pre + n, t), keys_fn=lambda l, h: torch.cat([other, keys]))
    for k in (1, 4, 5, 13, 17, 39):
        got = dart_mod.dart(both, k)["keep"]
        assert got.shape == (2, k) and (got.diff(dim=-1) > 0).all()
        norms = keys[0, pre:pre + n].abs().sum(-1)
        pivots = torch.sort(norms, descending=True, stable=True).indices[:min(k, 4)]
        assert set(pivots.tolist()) <= set(got[1].tolist())
    assert dart_mod.dart(both, 20)["keep"][1].tolist() == DART_OFFICIAL
    # only 2 tokens after the image: 6 pivots share the budget, still exactly K
    short = Step(layer=2, hidden=states[:, :pre + n + 2], previous_hidden=prev, image=(pre, n),
                 text_after_image=(pre + n, pre + n + 2), keys_fn=lambda l, h: keys[:, :pre + n + 2])
    for k in (5, 17, 30):
        assert dart_mod.dart(short, k)["keep"].shape == (1, k)
