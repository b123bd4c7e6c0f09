"""Overhead of ``lt.expectation`` over the hand-written score-function loss.

One gradient step = build the distribution, draw K samples, evaluate f, form the loss, backward:

* hand:  ``x = dist.sample((K,)); (f(x).detach() * dist.log_prob(x)).mean().backward()``
* lt:    ``lt.expectation(f, dist, samples=K, estimator="score_function").mean().backward()``

on the same samples (the same seed before each step), for Normal(loc, 1) and Bernoulli(logits)
with batch B, f(x) = (x - 0.5)^2. The two are interleaved (alternating order) and timed
``repeats`` times each; the table gives the medians and the ratio lt / hand. One thread.

``--ablation`` then times local copies of ``expectation`` (same checks and ops, switchable) on
K x B in {1 x 1, 256 x 64, 4096 x 64}, with one source of overhead removed at a time: the
grad-warning scan, the surrogate's second ``check_finite``, both checks, ``check_finite`` with a
one-reduction fast path (``isfinite(x.sum())``), one check on the reduced result, the
``(1 - box) * b`` term for b = 0, and a fused ``ScoreTerm`` autograd.Function (value ``cost`` as a
view; backward ``grad * cost``, with the magic box only under ``create_graph``), plus two combined
proposals (A, B), the floor with every check removed, and the bare ops (hand loss with the box).

Run:  python benchmarks/overhead.py [--ablation] [--budget 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx
from torch.distributions import Bernoulli, Distribution, Normal

import logtrick as lt
from logtrick.baselines import resolve_baseline
from logtrick.estimators import _has_grad_params, check_samples, joint_log_prob
from logtrick.surrogate import check_finite, magic_box

KS = (1, 16, 256, 4096)
BATCHES = (1, 64, 1024)
DISTS: dict[str, Callable[[Tensor], Distribution]] = {
    "Normal": lambda p: Normal(p, 1.0),
    "Bernoulli": lambda p: Bernoulli(logits=p),
}


def f(x: Tensor) -> Tensor:
    return (x - 0.5) ** 2


def hand_step(make: Callable, param: Tensor, k: int) -> None:
    dist = make(param)
    x = dist.sample((k,))
    (f(x).detach() * dist.log_prob(x)).mean().backward()


def lt_step(make: Callable, param: Tensor, k: int) -> None:
    lt.expectation(f, make(param), samples=k, estimator="score_function").mean().backward()


# --- a local copy of lt.expectation (score function, no baseline) with switches -------------


def fast_check(name: str, x: Tensor) -> None:
    """check_finite with a one-reduction fast path: NaN and inf propagate through a sum."""
    if not torch.isfinite(x.detach().sum()):
        check_finite(name, x)  # exact message (passes if only the sum overflowed)


def _cost(x: Tensor, dist: Distribution, k: int, check: Callable | None) -> Tensor:
    out = f(x)  # the shape check of evaluate_cost, as there
    batch = tuple(dist.batch_shape)
    allowed = [(k, *batch[:j]) for j in range(len(batch), -1, -1)]
    if tuple(out.shape) not in allowed:
        raise ValueError("f: bad shape")
    if check is not None:
        check("f(x)", out)
    return out


class ScoreTerm(torch.autograd.Function):
    """Fused per-sample term for b = 0: value ``cost``; gradient ``grad * cost`` to log_prob.

    When differentiated with ``create_graph=True`` the backward applies the magic box to what it
    returns, so higher derivatives are DiCE's; otherwise it costs one multiplication.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, cost: Tensor, log_prob: Tensor) -> Tensor:
        ctx.save_for_backward(cost, log_prob)
        return cost.view_as(cost)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor]:
        cost, log_prob = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: keep the higher-order terms
            box = magic_box(log_prob)
            return grad * box, grad * cost * box
        return grad, grad * cost.detach()


def _surrogate(cost: Tensor, log_prob: Tensor, check: Callable | None, variant: dict) -> Tensor:
    if not isinstance(cost, Tensor) or not isinstance(log_prob, Tensor):
        raise TypeError("cost, log_prob")
    if cost.shape != log_prob.shape:
        raise ValueError("shapes")
    if cost.dim() and not -cost.dim() <= 0 < cost.dim():
        raise ValueError("sample_dim")
    if check is not None:
        check("cost", cost)
    if variant.get("fused"):
        return ScoreTerm.apply(cost, log_prob)
    b = resolve_baseline(None)(cost, 0, None)
    box = magic_box(log_prob)
    if variant.get("b_term", True):
        return cost * box + (1.0 - box) * b.detach()
    return cost * box


def local_expectation(dist: Distribution, k: int, variant: dict) -> Tensor:
    if variant.get("bare"):  # the hand-written loss with the magic box: ops only, no Python checks
        x = dist.sample((k,))
        return (f(x) * magic_box(dist.log_prob(x))).mean(0)
    check_samples(k)
    if not isinstance(dist, Distribution):
        raise TypeError("dist")
    if variant.get("scan", True) and torch.is_grad_enabled() and not _has_grad_params(dist):
        warnings.warn("no grad", stacklevel=2)
    check = {"none": None, "sum": fast_check, "result": None}.get(
        variant.get("check"), check_finite
    )
    with torch.no_grad():
        x = dist.sample((k,))
    cost = _cost(x, dist, k, check)
    log_prob = joint_log_prob(dist, x, cost)
    second = None if variant.get("one_check") else check
    out = _surrogate(cost, log_prob, second, variant).mean(0)
    if variant.get("check") == "result" and not torch.isfinite(out.detach()).all():
        check_finite("f(x)", cost)  # the mean of the costs is finite iff they all are (or overflow)
    return out


VARIANTS: dict[str, dict] = {
    "local copy (as the library)": {},
    "- grad-warning scan": {"scan": False},
    "- surrogate's (second) finite check": {"one_check": True},
    "- both finite checks": {"check": "none"},
    "finite checks via a sum (fast path)": {"check": "sum"},
    "one finite check, on the result (B,)": {"check": "result"},
    "- (1-box)*b term (b = 0)": {"b_term": False},
    "fused ScoreTerm instead of magic box": {"fused": True},
    "A: one finite check (sum fast path), no b term": {
        "one_check": True,
        "check": "sum",
        "b_term": False,
    },
    "B: A + fused ScoreTerm": {"one_check": True, "check": "sum", "fused": True},
    "floor: no checks, no scan, cost*box": {"check": "none", "scan": False, "b_term": False},
    "bare: hand loss with cost*box, mean(0)": {"bare": True},
}


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


def _steps(make: Callable, p: Tensor, k: int, variants: bool) -> dict[str, Callable[[], None]]:
    """The timed steps of one cell: hand, lt and (optionally) the local variants."""
    steps = {"hand": lambda: hand_step(make, p, k), "lt.expectation": lambda: lt_step(make, p, k)}
    for label, variant in VARIANTS.items() if variants else ():
        steps[label] = lambda v=variant: local_expectation(make(p), k, v).mean().backward()
    return steps


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


def main_table(budget: float) -> list[tuple[str, int, int, float]]:
    print("| dist | K | B | hand (µs) | lt (µs) | ratio lt / hand |")
    print("|---|---:|---:|---:|---:|---:|")
    ratios = []
    for name, make in DISTS.items():
        for b in BATCHES:
            for k in KS:
                p = _param(b)
                steps = _steps(make, p, k, variants=False)
                _check_same_gradient(steps, p)
                med = interleaved(steps, budget)
                ratio = med["lt.expectation"] / med["hand"]
                ratios.append((name, k, b, ratio))
                print(f"| {name} | {k} | {b} | {med['hand'] * 1e6:.0f} | "
                      f"{med['lt.expectation'] * 1e6:.0f} | {ratio:.3f} |")  # fmt: skip
    return ratios


def ablation(cells: list[tuple[str, int, int]], budget: float) -> None:
    print("\n| dist | K | B | variant | µs | ratio / hand |")
    print("|---|---:|---:|---|---:|---:|")
    for name, k, b in cells:
        p = _param(b)
        steps = _steps(DISTS[name], p, k, variants=True)
        _check_same_gradient(steps, p)
        med = interleaved(steps, budget * len(steps) / 2)
        for label, t in med.items():
            print(f"| {name} | {k} | {b} | {label} | {t * 1e6:.0f} | {t / med['hand']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per cell")
    parser.add_argument("--ablation", action="store_true", help="also time local variants")
    parser.add_argument("--ablation-only", action="store_true", help="skip the main table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if not args.ablation_only:
        ratios = main_table(args.budget)
        worst = max(ratios, key=lambda r: r[3])
        print(f"\nworst ratio {worst[3]:.3f} ({worst[0]}, K={worst[1]}, B={worst[2]}); "
              f"{sum(r[3] > 1.05 for r in ratios)} of {len(ratios)} cells above 1.05, "
              f"{sum(r[3] > 1.10 for r in ratios)} above 1.10")  # fmt: skip
    if args.ablation or args.ablation_only:
        cells = [(d, k, b) for d in DISTS for k, b in ((1, 1), (256, 64), (4096, 64))]
        ablation(cells, args.budget)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
