r"""The REBAR/RELAX toy: minimise E[(b - t)^2], b ~ Bernoulli(sigma(theta)), t = 0.499 and 0.45.

.. math::  \mathbb{E}[(b-t)^2] = p(1-t)^2 + (1-p)t^2,\qquad
           \frac{d\mathbb{E}}{d\theta} = (1-2t)\,p(1-p) > 0 \ (t < 1/2),

so theta should go to -infinity (p -> 0). At t = 0.499 the true gradient at theta = 0 is 5e-4
while the plain score function's per-sample standard deviation is about 0.125.

Part 1 (theta = 0): mean, variance and variance x f-evaluations of each estimator, with the
exact gradient and, for the score-function family, the exact variance by enumerating all 2^K
joint outcomes. Part 2: Adam (lr 0.01, 2000 steps) from theta = 0 for 32 seeds at once (theta
has one entry per seed; every estimator, baseline and Adam act elementwise), reporting the final
theta and the fraction of seeds that went the right way (theta < 0). ARM, DisARM and REBAR
(untrained eta = 1, lambda = 0.5) are included when ``logtrick.arm`` / ``logtrick.rebar`` are
importable. A plot goes to ``benchmarks/out/bernoulli_toy.png``.

Run:  python benchmarks/bernoulli_toy.py [--steps 2000] [--seeds 32] [--repeats 200000]

References: Tucker et al. (2017), REBAR, section 6.1; Grathwohl et al. (2018), RELAX, 6.1.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Bernoulli

import logtrick as lt
from logtrick.diagnostics import GradientStats, gradient_variance
from logtrick.problems import bernoulli_problem

TARGETS = (0.499, 0.45)
OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Setup:
    """One estimator configuration; ``make(params)`` returns a fresh (estimator, baseline)."""

    name: str
    samples: int
    make: Callable[[list[Tensor]], tuple[object, object]]
    stateful: bool = False  # measured in a loop (state across repeats), not vectorised
    enumerable: bool = True  # a score-function estimator: exact variance by enumeration


def setups() -> list[Setup]:
    sf = lt.ScoreFunction()
    out = [
        Setup("score function", 1, lambda p: (sf, None)),
        Setup("sf + moving average (0.9)", 1, lambda p: (sf, lt.MovingAverage(0.9)), True, False),
        Setup("sf + leave-one-out", 2, lambda p: (sf, lt.LeaveOneOut())),
        Setup("sf + leave-one-out", 4, lambda p: (sf, lt.LeaveOneOut())),
        Setup("sf + optimal scale", 4, lambda p: (sf, lt.OptimalScale(p)), True),
    ]
    try:  # estimators being added to the library; included when present
        from logtrick.arm import ARM, DisARM

        out += [Setup("ARM", 1, lambda p: (ARM(), None), False, False),
                Setup("DisARM", 1, lambda p: (DisARM(), None), False, False)]  # fmt: skip
    except ImportError:
        print("(logtrick.arm not available: no ARM/DisARM rows)")
    try:
        from logtrick.rebar import Rebar

        out.append(Setup("REBAR (eta=1, lambda=0.5)", 1, lambda p: (Rebar(), None), False, False))
    except ImportError:
        print("(logtrick.rebar not available: no REBAR row)")
    return out


def f_of(target: float) -> Callable[[Tensor], Tensor]:
    return lambda b: (b - target) ** 2


def exact_gradient(theta: Tensor, target: float) -> Tensor:
    p = torch.sigmoid(theta)
    return (1 - 2 * target) * p * (1 - p)


def exact_variance(target: float, setup: Setup) -> float:
    """Variance of the K-sample estimate at theta = 0 by enumerating all 2^K outcomes."""
    theta = torch.zeros((), dtype=torch.float64, requires_grad=True)
    est, baseline = setup.make([theta])
    dist = Bernoulli(logits=theta)
    outcomes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=setup.samples)),
                            dtype=torch.float64)  # fmt: skip
    grads, probs = [], []
    for x in outcomes:
        terms = est.terms_at(f_of(target), dist, x, baseline, None)
        (g,) = torch.autograd.grad(terms.mean(), theta)
        grads.append(g)
        probs.append(dist.log_prob(x).sum().exp().detach())
    g, w = torch.stack(grads), torch.stack(probs)
    return float((w * g**2).sum() - (w * g).sum() ** 2)


def measure(target: float, setup: Setup, repeats: int, seed: int) -> GradientStats:
    problem = bernoulli_problem(target=target, theta=0.0)
    est, baseline = setup.make(list(problem.params))
    vectorize = not setup.stateful
    r = repeats if vectorize else max(repeats // 40, 500)
    return gradient_variance(problem.f, problem.dist_fn, problem.params, setup.samples, est,
                             baseline, r, warmup=0 if vectorize else 100, vectorize=vectorize,
                             seed=seed)  # fmt: skip


def variance_table(repeats: int, seed: int) -> dict[float, list[tuple[str, float]]]:
    print("| t | estimator | K | f-evals | mean ± SE | z vs exact | variance ± SE | exact variance "
          "| var × evals | R |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    work: dict[float, list[tuple[str, float]]] = {}
    for target in TARGETS:
        exact = float(exact_gradient(torch.tensor(0.0), target))
        print(f"| {target} | exact gradient (enumeration) | - | 2 | {exact:.3g} | - | 0 | 0 | - "
              f"| - |")  # fmt: skip
        work[target] = []
        for i, setup in enumerate(setups()):
            s = measure(target, setup, repeats, seed + i)
            ev = exact_variance(target, setup) if setup.enumerable else None
            mean, se, var = float(s.mean[0]), float(s.stderr[0]), float(s.variance[0])
            if se > 0:
                z = (mean - exact) / se
            else:  # a zero-variance estimator: equal up to float32 rounding, or wrong
                z = 0.0 if abs(mean - exact) <= 1e-5 * abs(exact) else float("inf")
            work[target].append((f"{setup.name}, K={setup.samples}", var * s.f_evals))
            cells = [
                str(target), setup.name, str(setup.samples), f"{s.f_evals:g}",
                f"{mean:.3g} ± {se:.2g}", f"{z:+.1f}",
                f"{var:.3g} ± {float(s.variance_se[0]):.2g}",
                "-" if ev is None else f"{ev:.3g}", f"{var * s.f_evals:.3g}", str(s.repeats),
            ]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    return work


def sgd(target: float, setup: Setup | None, steps: int, seeds: int, seed: int, lr: float) -> Tensor:
    """Adam from theta = 0, one entry of theta per seed; ``setup=None``: the exact gradient."""
    torch.manual_seed(seed)
    theta = torch.zeros(seeds, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    est, baseline = setup.make([theta]) if setup else (None, None)
    path = torch.empty(steps + 1, seeds)
    path[0] = theta.detach()
    for step in range(steps):
        opt.zero_grad()
        if setup is None:
            p = torch.sigmoid(theta)
            loss = (p * (1 - target) ** 2 + (1 - p) * target**2).sum()
        else:
            loss = lt.expectation(f_of(target), Bernoulli(logits=theta), setup.samples, est,
                                  baseline).sum()  # fmt: skip
        loss.backward()
        opt.step()
        path[step + 1] = theta.detach()
    return path


def sgd_table(steps: int, seeds: int, seed: int, lr: float) -> dict[float, dict[str, Tensor]]:
    print(f"\n| t | estimator | K | final θ: mean (min, max) over {seeds} seeds | right way "
          f"(θ < 0) |")  # fmt: skip
    print("|---|---|---:|---:|---:|")
    paths: dict[float, dict[str, Tensor]] = {}
    for target in TARGETS:
        paths[target] = {}
        for setup in [None, *setups()]:
            name = "exact gradient" if setup is None else f"{setup.name}, K={setup.samples}"
            path = sgd(target, setup, steps, seeds, seed, lr)
            paths[target][name] = path
            last = path[-1]
            print(f"| {target} | {name.rsplit(', K=', 1)[0]} | "
                  f"{'-' if setup is None else setup.samples} | {float(last.mean()):.2f} "
                  f"({float(last.min()):.2f}, {float(last.max()):.2f}) | "
                  f"{float((last < 0).float().mean()):.0%} |")  # fmt: skip
    return paths


def plot(work: dict, paths: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for col, target in enumerate(TARGETS):
        ax = axes[0, col]
        for name, p in paths[target].items():
            mean = p.mean(1)
            ax.plot(mean.numpy(), label=name)
            ax.fill_between(range(len(mean)), p.quantile(0.1, 1).numpy(),
                            p.quantile(0.9, 1).numpy(), alpha=0.15)  # fmt: skip
        ax.set_title(f"t = {target}: θ under Adam (mean, 10-90% of seeds)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("θ")
        ax.legend(fontsize=7)
        ax = axes[1, col]
        names, values = zip(*work[target])
        floor = min((v for v in values if v > 0), default=1.0) / 100  # zero: a short bar, "0"
        bars = ax.barh(names, [max(v, floor) for v in values], color="tab:blue", alpha=0.8)
        ax.bar_label(bars, [f"{v:.2g}" for v in values], fontsize=7, padding=2)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"t = {target}: variance × f-evaluations at θ = 0", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    work = variance_table(args.repeats, args.seed)
    paths = sgd_table(args.steps, args.seeds, args.seed, args.lr)
    plot(work, paths, OUT / "bernoulli_toy.png")
    print(f"\nplot: {OUT / 'bernoulli_toy.png'}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
