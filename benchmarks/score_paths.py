"""Time of ``lt.score`` on N samples by path: vmap, per-sample parameter copies, the loop.

``lt.score`` runs ``vmap(grad(log_prob))`` where ``log_prob`` allows it; ``Geometric`` and
``Multinomial`` index with a boolean mask in place, which ``vmap`` refuses, and go through one
backward pass with a copy of the parameters per sample; the loop of ``torch.autograd.grad`` (one
backward per sample) is the last resort. For each family the table gives the median time of
``lt.score`` (its own path) and of the loop on the same samples, interleaved, and the ratio
loop / score. One thread.

Run:  python benchmarks/score_paths.py [--samples 1000 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributions as D
from torch import Tensor

import logtrick as lt
import logtrick.scores as score_module

DT = torch.float64
FAMILIES: dict[str, tuple[Callable[[list[Tensor]], D.Distribution], list[Tensor], str]] = {
    "Normal": (lambda p: D.Normal(p[0], p[1]), [torch.zeros(3, dtype=DT), torch.ones(3)], "vmap"),
    "Geometric": (lambda p: D.Geometric(logits=p[0]), [torch.tensor([0.3, -1.0])], "copies"),
    "Multinomial": (
        lambda p: D.Multinomial(4, logits=p[0]),
        [torch.tensor([0.3, -1.0, 0.5])],
        "copies",
    ),
}


def _seconds(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| family | path | N | lt.score (ms) | loop (ms) | loop / score |\n|{'---|' * 6}")
    for name, (dist_fn, params, path) in FAMILIES.items():
        params = [p.to(DT) for p in params]
        for n in args.samples:
            torch.manual_seed(0)
            x = dist_fn(params).sample((n,))
            lt.score(dist_fn, params, x)  # warm-up
            fast, loop = [], []
            for _ in range(args.repeats):  # interleaved
                fast.append(_seconds(lt.score, dist_fn, params, x))
                loop.append(_seconds(score_module._looped_grads, dist_fn, params, x))
            f_ms, l_ms = 1e3 * statistics.median(fast), 1e3 * statistics.median(loop)
            print(f"| {name} | {path} | {n} | {f_ms:.1f} | {l_ms:.0f} | {l_ms / f_ms:.0f} |")


if __name__ == "__main__":
    main()
