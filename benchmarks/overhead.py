"""Overhead of ``lt.expectation`` over the hand-written score-function loss.

One gradient step = build the distribution, draw K samples, evaluate f, form the loss, backward:

* hand:  ``x = dist.sample((K,)); (f(x).detach() * dist.log_prob(x)).mean().backward()``
* lt:    ``lt.expectation(f, dist, samples=K, estimator="score_function").mean().backward()``

on the same samples (the same seed before each step), for Normal(loc, 1) and Bernoulli(logits)
with batch B, f(x) = (x - 0.5)^2, K x B over K in {1, 16, 256, 4096}, B in {1, 64, 1024}, plus
the Bernoulli toy of the REBAR/RELAX benchmark (K = 4 samples of 64 coordinates, f summed over
them). The two are interleaved (rotating order) and timed repeatedly within a time budget per
cell; the table gives the medians and the ratio lt / hand. The script first checks that both give
the same gradient. One thread. It uses only ``logtrick``'s public API, so it also times an older
checkout (``PYTHONPATH=<old>/src``): that is how the before/after table in BENCHMARKS.md was made.

``--ablation`` then times the two implementations of the score term inside the library on a few
cells: the magic box as three native autograd nodes (``exp(l - l.detach())``, times the cost, mean
over the samples) and the fused autograd ``Function`` (``logtrick.dice.ScoreTerm``: the forward is
the mean of the costs, the first-order backward one multiplication), by setting
``logtrick.dice.FUSED_MIN_NUMEL`` (the size from which the library fuses).

``--issue23`` times the cells of issue 23 instead: ``Independent(Normal(loc, 1), 1)`` with 8
event dimensions, f(x) = sum((x - 0.5)^2) over them, K in {1, 16, 256, 4096} x B in {1, 64}
(target: ratio <= 1.05 in every cell).

Run:  python benchmarks/overhead.py [--ablation] [--issue23] [--budget 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent, Normal

import logtrick as lt

KS = (1, 16, 256, 4096)
BATCHES = (1, 64, 1024)
DISTS: dict[str, Callable[[Tensor], Distribution]] = {
    "Normal": lambda p: Normal(p, 1.0),
    "Bernoulli": lambda p: Bernoulli(logits=p),
}
TOY = ("Bernoulli toy", 4, 64)
"""The REBAR/RELAX Bernoulli toy: K = 4 samples of 64 coordinates, f sums over them (one joint
sample; the hand-written loss sums the log-probabilities)."""


def f(x: Tensor) -> Tensor:
    return (x - 0.5) ** 2


def f_toy(x: Tensor) -> Tensor:
    return ((x - 0.45) ** 2).sum(-1)


def hand_step(make: Callable, param: Tensor, k: int) -> None:
    dist = make(param)
    x = dist.sample((k,))
    (f(x).detach() * dist.log_prob(x)).mean().backward()


def lt_step(make: Callable, param: Tensor, k: int) -> None:
    lt.expectation(f, make(param), samples=k, estimator="score_function").mean().backward()


def hand_toy(make: Callable, param: Tensor, k: int) -> None:
    dist = make(param)
    x = dist.sample((k,))
    (f_toy(x).detach() * dist.log_prob(x).sum(-1)).mean().backward()


def lt_toy(make: Callable, param: Tensor, k: int) -> None:
    lt.expectation(f_toy, make(param), samples=k, estimator="score_function").backward()


# --- timing ------------------------------------------------------------------------------------


def _time(step: Callable[[], None], seed: int) -> float:
    torch.manual_seed(seed)
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def interleaved(steps: dict[str, Callable[[], None]], budget: float) -> dict[str, float]:
    """Median seconds per step of each, interleaved in rotating order within ``budget`` seconds."""
    names = list(steps)
    for name in names:  # warm-up
        for _ in range(3):
            steps[name]()
    probe = min(_time(steps[n], 0) for n in names)
    repeats = max(9, min(3000, int(budget / (len(names) * max(probe, 1e-6)))))
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_time(steps[name], r))
    return {n: statistics.median(t) for n, t in times.items()}


def _param(b: int) -> Tensor:
    return torch.zeros(b).uniform_(-0.5, 0.5).requires_grad_(True)


def _check_same_gradient(steps: dict[str, Callable[[], None]], p: Tensor) -> None:
    """Every step computes the same gradient from the same seed."""
    grads = []
    for step in steps.values():
        p.grad = None
        torch.manual_seed(123)
        step()
        grads.append(p.grad.clone())
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-4, atol=1e-6)


EVENT = 8
"""Event dimensions of the issue-23 cells."""


def make_event(p: Tensor) -> Distribution:
    return Independent(Normal(p, 1.0), 1)


def f_event(x: Tensor) -> Tensor:
    return ((x - 0.5) ** 2).sum(-1)


def hand_event(param: Tensor, k: int) -> None:
    dist = make_event(param)
    x = dist.sample((k,))
    (f_event(x).detach() * dist.log_prob(x)).mean().backward()


def lt_event(param: Tensor, k: int) -> None:
    lt.expectation(
        f_event, make_event(param), samples=k, estimator="score_function"
    ).mean().backward()


def issue23_table(budget: float) -> None:
    """The issue-23 cells: Normal with 8 event dims, K x B, medians of interleaved repeats."""
    print("| K | B | hand (µs) | lt (µs) | ratio lt / hand |")
    print("|---:|---:|---:|---:|---:|")
    worst = 0.0
    for b in (1, 64):
        for k in KS:
            p = torch.zeros(b, EVENT).uniform_(-0.5, 0.5).requires_grad_(True)
            steps = {"hand": partial(hand_event, p, k), "lt": partial(lt_event, p, k)}
            _check_same_gradient(steps, p)
            med = interleaved(steps, budget)
            ratio = med["lt"] / med["hand"]
            worst = max(worst, ratio)
            print(f"| {k} | {b} | {med['hand'] * 1e6:.1f} | {med['lt'] * 1e6:.1f} | {ratio:.3f} |",
                  flush=True)  # fmt: skip
    print(f"\nworst ratio {worst:.3f} (target <= 1.05)")


def cells() -> list[tuple[str, int, int]]:
    return [(name, k, b) for name in DISTS for b in BATCHES for k in KS] + [TOY]


def _steps(name: str, k: int, p: Tensor) -> dict[str, Callable[[], None]]:
    if name == TOY[0]:
        return {"hand": partial(hand_toy, DISTS["Bernoulli"], p, k),
                "lt": partial(lt_toy, DISTS["Bernoulli"], p, k)}  # fmt: skip
    return {
        "hand": partial(hand_step, DISTS[name], p, k),
        "lt": partial(lt_step, DISTS[name], p, k),
    }


def main_table(budget: float) -> list[tuple[str, int, int, float]]:
    print("| dist | K | B | hand (µs) | lt (µs) | ratio lt / hand |")
    print("|---|---:|---:|---:|---:|---:|")
    ratios = []
    for name, k, b in cells():
        p = _param(b)
        steps = _steps(name, k, p)
        _check_same_gradient(steps, p)
        med = interleaved(steps, budget)
        ratio = med["lt"] / med["hand"]
        ratios.append((name, k, b, ratio))
        print(f"| {name} | {k} | {b} | {med['hand'] * 1e6:.0f} | {med['lt'] * 1e6:.0f} | "
              f"{ratio:.3f} |", flush=True)  # fmt: skip
    return ratios


def summary(ratios: list[tuple[str, int, int, float]]) -> None:
    """Worst ratio and the targets: <= 1.05 where K x B >= 256, <= 1.10 at K = B = 1."""
    worst = max(ratios, key=lambda r: r[3])
    large = [r for r in ratios if r[1] * r[2] >= 256]
    tiny = [r for r in ratios if r[1] == r[2] == 1]
    print(f"\nworst ratio {worst[3]:.3f} ({worst[0]}, K={worst[1]}, B={worst[2]}); "
          f"K·B >= 256: {sum(r[3] <= 1.05 for r in large)} of {len(large)} cells <= 1.05 "
          f"(worst {max(r[3] for r in large):.3f}); K = B = 1: "
          f"{', '.join(f'{r[0]} {r[3]:.3f}' for r in tiny)} (target <= 1.10)")  # fmt: skip


def _lt_step_fused_from(threshold: int, make: Callable, param: Tensor, k: int) -> None:
    import logtrick.dice as dice

    dice.FUSED_MIN_NUMEL = threshold
    lt_step(make, param, k)


ABLATION_CELLS = ((1, 1), (4, 64), (16, 64), (64, 64), (256, 64), (4096, 64))


def ablation(budget: float) -> None:
    """The native magic box against the fused ScoreTerm, inside lt.expectation."""
    import logtrick.dice as dice

    default = dice.FUSED_MIN_NUMEL
    variants = {"native box": 1 << 62, "fused ScoreTerm": 0}
    print(f"\n| dist | K | B | hand (µs) | {' | '.join(variants)} (ratio / hand) |")
    print("|---|---:|---:|---:|" + "---:|" * len(variants))
    for name, (k, b) in [(d, c) for d in DISTS for c in ABLATION_CELLS]:
        p, make = _param(b), DISTS[name]
        steps = {"hand": partial(hand_step, make, p, k)}
        for label, threshold in variants.items():
            steps[label] = partial(_lt_step_fused_from, threshold, make, p, k)
        _check_same_gradient(steps, p)
        med = interleaved(steps, budget * len(steps) / 2)
        ratios = " | ".join(f"{med[v] / med['hand']:.3f}" for v in variants)
        print(f"| {name} | {k} | {b} | {med['hand'] * 1e6:.0f} | {ratios} |", flush=True)
    dice.FUSED_MIN_NUMEL = default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per cell")
    parser.add_argument("--ablation", action="store_true", help="also time the two score terms")
    parser.add_argument("--ablation-only", action="store_true", help="skip the main table")
    parser.add_argument("--issue23", action="store_true", help="only the issue-23 cells")
    parser.add_argument(
        "--whole",
        choices=["hand", "lt"],
        help="run only this side of one issue-23 cell for --steps steps (for tools/ratio)",
    )
    parser.add_argument("--cell", type=int, nargs=2, default=[1, 1], metavar=("K", "B"))
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.whole:
        k, b = args.cell
        p = torch.zeros(b, EVENT).uniform_(-0.5, 0.5).requires_grad_(True)
        step = hand_event if args.whole == "hand" else lt_event
        for i in range(args.steps):
            torch.manual_seed(i)
            step(p, k)
        return
    if args.issue23:
        issue23_table(args.budget)
    elif not args.ablation_only:
        summary(main_table(args.budget))
    if args.ablation or args.ablation_only:
        ablation(args.budget)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
