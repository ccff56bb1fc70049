"""python -m llava.tools.benchmark on the tiny random-weights model (CPU, one repeat)."""
import json

import pytest

from llava.tools import benchmark

# tiny preset: LLaMA d=64, d_ff=128, 3 layers, 4 heads (head_dim 16, no GQA); CLIP 336/14 -> 576 patches
D, D_FF, LAYERS, KV_HEADS, HEAD_DIM, FLOAT32 = 64, 128, 3, 4, 16, 4
PROMPT, VISUAL, K = 16, 576, 64


def hand_flops(n, layers=LAYERS):
    per_layer = 2 * n * (4 * D * D + 3 * D * D_FF) + 2 * 2 * n * n * D
    return layers * per_layer


def hand_kv_bytes(tokens_per_layer):
    return sum(2 * KV_HEADS * HEAD_DIM * n * FLOAT32 for n in tokens_per_layer)  # keys + values, batch 1


def run(tmp_path, methods, *extra):
    out = tmp_path / f"{methods.replace(',', '_')}.json"
    report = benchmark.main(["--random-weights", "tiny", "--methods", methods, "--visual-token-num", str(K),
                             "--repeats", "1", "--warmup", "0", "--new-tokens", "3", "--prompt-tokens", str(PROMPT),
                             "--device", "cpu", "--dtype", "float32", "--threads", "1", "--out", str(out),
                             "--markdown", str(tmp_path / "table.md"), *extra])
    with open(out) as f:
        data = json.load(f)
    assert data["meta"]["model"] == report["meta"]["model"]
    return data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run(tmp_path_factory.mktemp("bench"), "none,agile")


def test_json_has_every_figure(report, tmp_path_factory):
    assert {"meta", "results", "tower_cls_row", "agile_vs_loop"} <= set(report)
    assert [(r["method"], r["k"]) for r in report["results"]] == [("none", None), ("agile", K)]
    for r in report["results"]:
        for stage in ("tower", "prune", "splice", "prefill", "decode", "ttft", "e2e"):
            assert len(r["raw_ms"][stage]) == 1 and r["raw_ms"][stage][0] >= 0
            assert {"median", "min", "max", "q1", "q3"} <= set(r["stats"][stage])
        assert r["stats"]["decode_tok_s"]["median"] > 0
        assert {"peak_bytes", "peak_above_start_bytes", "kind"} <= set(r["memory"])
        assert r["kv_cache_bytes"] > 0 and r["prefill_flops"] > 0
        assert {"prefill_speedup", "ideal_speedup", "token_ratio"} <= set(r)
        assert all(r["checks"].values()), r["checks"]  # staged path == prepare_inputs + generate
    t = report["tower_cls_row"]
    assert t["with_cls_row_ms"]["median"] > 0 and t["without_cls_row_ms"]["median"] > 0


def test_kv_cache_shrinks_exactly_as_the_token_counts_say(report):
    none, agile = report["results"]
    assert none["llm_tokens_per_layer"] == [PROMPT + VISUAL] * LAYERS
    assert agile["llm_tokens_per_layer"] == [PROMPT + K] * LAYERS
    assert none["kv_cache_bytes"] == hand_kv_bytes([PROMPT + VISUAL] * LAYERS)
    assert agile["kv_cache_bytes"] == hand_kv_bytes([PROMPT + K] * LAYERS)
    assert agile["kv_cache_bytes"] * (PROMPT + VISUAL) == none["kv_cache_bytes"] * (PROMPT + K)


def test_flops_match_a_hand_computation(report):
    none, agile = report["results"]
    assert none["prefill_flops"] == hand_flops(PROMPT + VISUAL)
    assert agile["prefill_flops"] == hand_flops(PROMPT + K)
    assert agile["ideal_speedup"] == pytest.approx(hand_flops(PROMPT + VISUAL) / hand_flops(PROMPT + K))
    # 7B, one sequence of 100 tokens, one layer: 2*100*(4*4096^2 + 3*4096*11008) + 4*100^2*4096
    assert benchmark.layer_flops(100, 4096, 11008) == 40_638_873_600


def test_agile_matches_the_reference_loop_on_the_runs_features(report):
    rows = report["agile_vs_loop"]
    assert [row["k"] for row in rows] == [K] and all(row["identical"] for row in rows)


def test_fastv_counts_its_full_length_layers(tmp_path):
    data = run(tmp_path, "fastv", "--fastv-layer", "2", "--no-agile-loop")
    r = data["results"][0]
    per_layer = [PROMPT + VISUAL] * 2 + [PROMPT + K]
    assert r["llm_tokens_per_layer"] == per_layer
    assert r["kv_cache_bytes"] == hand_kv_bytes(per_layer)
    assert r["prefill_flops"] == hand_flops(PROMPT + VISUAL, 2) + hand_flops(PROMPT + K, 1)
    assert all(r["checks"].values()), r["checks"]
    assert "| fastv | 64 | 592/80 |" in (tmp_path / "table.md").read_text()


def test_plot_without_matplotlib_says_so(monkeypatch, capsys, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert benchmark.plot({"results": [], "meta": {}}, str(tmp_path / "p.png")) is False
    assert "matplotlib is not installed" in capsys.readouterr().err
