"""Time each pruning method's token selection, and compare `agile` with the per-token loop it replaces.

    python -m llava.tools.bench_select [--n 576 --visual-token-num 64 --dim 4096 --batch-size 1 --repeats 20 \\
        --device cpu]

Inputs are random stand-ins for LLaVA-1.5-7B's post-projector tokens (N x 4096) and CLS attention, in
three regimes (see `synthetic_tokens`): `simple` (erank ~60, like the paper's OCR/maths images: many
tokens within tau of each other, so few survive and the walk scans the whole attention order),
`complex` (erank ~120, like its cluttered scenes) and `noise` (i.i.d. Gaussian: no two tokens within
tau, the walk ends after 2k positions). For agile it also reports, per regime, its time against the
previous vectorised agile (full geometry + walk), the official code's computation (`agile_official`:
erank, cosine matrix, per-token loop), `agile_reference_loop` and fastervlm, how many images needed the
exact path (the erank), and checks that agile, the previous agile and the loop give identical indices.
"""
import statistics
import sys
import time

import torch
from tqdm import tqdm

from llava.utils import entry_parser

from llava.pruning.agile import (AGILE_DEFAULTS, agile_from_geometry, agile_official,
                                 agile_reference_from_geometry, agile_reference_loop, agile_select)
from llava.pruning.geometry import token_geometry
from llava.pruning.metrics import effective_rank
from llava.pruning.registry import METHODS
from llava.pruning.select import prune_visual_tokens, select_visual_tokens
from llava.pruning.synthetic import REGIMES, synthetic_tokens  # noqa: F401 (re-exported for the benches)


def timed(fn, repeats, device):
    """(last output, median ms) over `repeats` runs after one warm-up."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return out, statistics.median(times) * 1e3


def progress(desc, total=None, iterable=None):
    """A progress bar on stderr: shown on a terminal only (disable=None) and cleared when done (leave=False),
    so the tables printed after it stay clean."""
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=None, leave=False)


def synthetic_signals(features, names):
    """Stand-ins, from the synthetic tokens themselves, for the tower signals a method reads (the tower's
    states are the features; attention maps are softmax(x x^T / sqrt(D)); the CLS token is the mean token)."""
    b, n, d = features.shape
    cls = features.mean(dim=1, keepdim=True)
    out = {}
    if "states" in names:
        out["states"] = features
    if "cls_state" in names:
        out["cls_state"] = cls[:, 0]
    if "patch_attention" in names:
        out["patch_attention"] = (features @ features.transpose(1, 2) / d ** 0.5).softmax(dim=-1)
    tokens = torch.cat([cls, features], dim=1)
    for name in ("last_qk", "select_qk"):
        if name in names:
            out[name] = (tokens, tokens, 1)
    return out


def method_table(inputs, k, repeats, device):
    """Markdown rows: median ms per method and regime (visionzip: prune_visual_tokens on the same features)."""
    lines = [f"| method | {' | '.join(f'{r} (ms)' for r in inputs)} |", "|---|" + "---|" * len(inputs)]
    methods = [(m, spec) for m, spec in METHODS.items() if spec.stage in ("pre-projector", "post-projector")]
    with progress("selection", total=len(methods) * len(inputs)) as bar:
        for m, spec in methods:
            call = prune_visual_tokens if spec.stage == "pre-projector" else select_visual_tokens
            cells = []
            for regime, (f, a) in inputs.items():
                bar.set_postfix_str(f"{m} {regime}", refresh=False)
                signals = synthetic_signals(f, spec.inputs)
                cells.append(f"{timed(lambda: call(m, f, a, k, **signals), repeats, device)[1]:.2f}")
                bar.update()
            lines.append(f"| {m} | {' | '.join(cells)} |")
    return lines


def agile_comparison(inputs, k, repeats, device):
    """Lines: agile against the computations it replaces, with an identity check, per regime.

    agile: select_visual_tokens("agile") (agile.agile_select: certified walk on lazily computed distance
    rows, exact path when the certificate cannot decide); previous: the vectorised walk on the full
    geometry (token_geometry: centred Gram, eigvalsh, distances; then agile_walk), what `agile` ran before;
    official: agile.agile_official, the official code's computation (erank on its own, cosine matrix as a
    second product, per-token loop); loop: agile_reference_loop (our geometry, per-token loop); walk alone:
    agile_from_geometry vs agile_reference_from_geometry on the same precomputed geometry.
    identical: agile == loop == previous (and the two walks agree); the official computation's indices are
    reported apart (its direct-formula distances can differ from token_geometry's by float32 rounding)."""
    lines = []
    loop_repeats = max(1, min(repeats, 5))
    for regime, (f, a) in progress("agile vs loop", iterable=inputs.items(), total=len(inputs)):
        fast, t_fast = timed(lambda: select_visual_tokens("agile", f, a, k), repeats, device)

        def previous():
            dist, erank = token_geometry(f)
            return agile_from_geometry(dist, erank, a, k, **AGILE_DEFAULTS).sort(-1).values

        prev, t_prev = timed(previous, repeats, device)
        official, t_official = timed(lambda: agile_official(f, a, k), loop_repeats, device)
        slow, t_slow = timed(lambda: agile_reference_loop(f, a, k), loop_repeats, device)
        _, t_faster = timed(lambda: select_visual_tokens("fastervlm", f, a, k), repeats, device)
        dist, erank = token_geometry(f)
        walk, t_walk = timed(lambda: agile_from_geometry(dist, erank, a, k, **AGILE_DEFAULTS).sort(-1).values,
                             repeats, device)
        ref, t_ref = timed(lambda: agile_reference_from_geometry(dist, erank, a, k, **AGILE_DEFAULTS),
                           loop_repeats, device)
        same = (torch.equal(fast, slow) and torch.equal(walk, ref) and torch.equal(fast, walk)
                and torch.equal(fast, prev))
        fast_stats, loop_stats = {}, {}
        agile_select(f, a, k, stats=fast_stats)
        agile_reference_from_geometry(dist, erank, a, k, stats=loop_stats)
        syncs = sum(fast_stats.get(key, 0) for key in ("blocks", "rounds", "exact_blocks", "exact_rounds")) + 1
        erank_mean = effective_rank(f).mean().item()
        lines.append(f"  {regime:8s} erank {erank_mean:6.1f} | agile {t_fast:8.2f} ms (exact path for "
                     f"{fast_stats['exact']}/{f.shape[0]} images) | previous {t_prev:8.2f} ms | official "
                     f"{t_official:8.2f} ms, speed-up {t_official / t_fast:5.1f}x | loop {t_slow:8.2f} ms, speed-up "
                     f"{t_slow / t_fast:5.1f}x | fastervlm {t_faster:6.2f} ms | walk alone: {t_walk:7.3f} ms vs "
                     f"{t_ref:7.3f} ms | host syncs {syncs} vs {loop_stats['syncs']} | identical: {same}, "
                     f"same as official: {torch.equal(fast, official)}")
    return lines


def add_shape_args(parser):
    """The input shape and device flags both selection benches take (N, K, D, --device)."""
    parser.add_argument("--n", type=int, default=576, help="visual tokens per image (N)")
    parser.add_argument("--visual-token-num", "--k", dest="k", metavar="K", type=int, default=64,
                        help="tokens kept per image (K)")
    parser.add_argument("--dim", "--d", dest="dim", metavar="D", type=int, default=4096,
                        help="feature width (D; LLaVA-1.5-7B: 4096)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda, cpu, mps, ...")
    return parser


def build_parser():
    parser = add_shape_args(entry_parser("llava.tools.bench_select", __doc__))
    parser.add_argument("--batch-size", "--batch", dest="batch", metavar="B", type=int, default=1,
                        help="images per selection call (B)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed runs per figure, after one warm-up (medians; the per-token loop: at most 5)")
    parser.add_argument("--regimes", default=",".join(REGIMES),
                        help="comma-separated subset of the input regimes: " + ", ".join(REGIMES))
    return parser


@torch.no_grad()  # not torch.set_grad_enabled(False): main() is also called in-process (tests)
def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    inputs = {r: synthetic_tokens(r, args.batch, args.n, args.dim, seed=i, device=device)
              for i, r in enumerate(args.regimes.split(","))}
    print(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, B={args.batch}, "
          f"N={args.n}, K={args.k}, D={args.dim}, median of {args.repeats} "
          f"(loops: of {max(1, min(args.repeats, 5))})\n")
    print("\n".join(method_table(inputs, args.k, args.repeats, device)))
    print("\nagile (certified fast path) vs previous vectorised agile, official computation, per-token loop:")
    print("\n".join(agile_comparison(inputs, args.k, args.repeats, device)))


if __name__ == "__main__":
    main()
