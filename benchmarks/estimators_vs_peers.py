r"""logtrick's gradient estimators next to the same estimators in Pyro and Storchastic.

Three problems, one process, ``torch.set_num_threads(1)``:

1. The Bernoulli toy E[(b - t)^2], b ~ Bernoulli(sigmoid(theta)), t = 0.499 and 0.45, at
   theta = 0 (exact gradient (1 - 2t)/4). For a budget of K evaluations of f (K = 1, 2, 4, 16):
   the variance of one gradient estimate of every estimator each system has (score function,
   + leave-one-out / Storchastic's batch average, + moving average / Pyro's decaying average,
   ARM and DisARM with K/2 antithetic pairs, REBAR with max(1, round(K/3)) draws (3 evaluations
   each), RELAX with K draws and a small untrained control variate shared by both systems,
   Gumbel-softmax at temperature 1 (biased)); the bias z of each mean against the exact
   gradient; the time per step; and, at t = 0.499, Adam (lr 0.01, 2000 steps, 32 seeds) from
   theta = 0: which estimators drive theta the right way (theta < 0).
2. A discrete VAE on scikit-learn's digits (8x8, binarised at pixel >= 8 of 16;
   ``train_test_split(random_state=0)``: 1347 train, 450 test), 32 and 64 Bernoulli latents,
   linear and one-hidden-layer (128 tanh units) encoder and decoder, a learned prior, Adam
   (lr 3e-3, batches of 50): train and test -ELBO (10 samples per image) after a fixed number
   of steps and after a fixed wall-clock time, per estimator and system.
3. The Gaussian test functions, x ~ N(1, 1), f in {(x-k)^2, exp(-k x^2), cos(k x)}: variance of
   the score-function gradient of (mu, sigma) in logtrick and in Pyro (non-reparameterised site).

Pyro computes E[f] as an ELBO: the guide samples b ~ q_theta, the model samples the same site
from q with *detached* parameters and adds ``pyro.factor(-f(b))``, so log p(b) - log q(b) is
exactly 0 per sample and ``TraceGraph_ELBO``'s gradient is (f(b) - baseline) * grad log q(b), the
score-function estimator. Replicas (R independent estimates) are a plate (Pyro), a leading
dimension of theta (logtrick) or ``storch.denote_independent`` (Storchastic, where its method
supports it; otherwise a loop of single estimates).

Storchastic patches torch when imported (``torch.is_tensor``, ``Tensor.to/le/gt``, and it turns
off distribution argument validation globally), so it is imported only after every logtrick and
Pyro measurement of phase A; phase B re-times logtrick next to Storchastic in the patched process.

Run:  python benchmarks/estimators_vs_peers.py [--seconds 10] [--steps 300] [--quick]
Writes benchmarks/estimators_vs_peers.md (and prints it).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Normal

import logtrick as lt

torch.set_num_threads(1)
OUT = Path(__file__).resolve().parent / "estimators_vs_peers.md"
MD: list[str] = []
Step = Callable[[], None]


START = time.perf_counter()


def emit(line: str = "") -> None:
    MD.append(line)


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.0f} s] {message}", flush=True)


def var_stats(g: Tensor) -> tuple[float, float, float, float]:
    """Mean, its SE, the sample variance and the SE of the variance (fourth moment) of ``g``."""
    g = g.double().flatten()
    r = g.numel()
    mean, dev = g.mean(), g - g.mean()
    var = float(dev.pow(2).sum() / (r - 1))
    m4 = float(dev.pow(4).mean())
    se_var = math.sqrt(max(m4 - (r - 3) / (r - 1) * var**2, 0.0) / r)
    return float(mean), math.sqrt(var / r), var, se_var


def bias_z(mean: float, se: float, exact: float) -> float:
    if se == 0:  # a zero-variance estimator: right up to rounding, or wrong
        return 0.0 if abs(mean - exact) <= 1e-5 * max(abs(exact), 1e-12) else math.inf
    return (mean - exact) / se


def timed(steps: dict[str, Step], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, interleaved in rotating order (same conditions)."""
    names, times = list(steps), {n: [] for n in steps}
    for name in names:
        steps[name]()  # warm-up
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(v) for n, v in times.items()}


# ---------------------------------------------------------------------------------------------
# Problem 1: the Bernoulli toy

TARGETS, BUDGETS = (0.499, 0.45), (1, 2, 4, 16)


def toy_f(target: float) -> Callable[[Tensor], Tensor]:
    return lambda b: (b - target) ** 2


class ScalarCV(nn.Module):
    """RELAX's control variate c_phi, applied elementwise to relaxed samples in (0, 1)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the same weights in both systems
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y.unsqueeze(-1)).squeeze(-1)


class LogitsCV(nn.Module):
    """logtrick's Relax passes logits z; sigmoid(z) (temperature 1) is Storchastic's input."""

    def __init__(self, cv: ScalarCV) -> None:
        super().__init__()
        self.cv = cv

    def forward(self, z: Tensor) -> Tensor:
        return self.cv(torch.sigmoid(z))


def lt_toy(name: str, budget: int) -> tuple[Callable[[], tuple[object, object]], int] | None:
    """(factory of a fresh (estimator, baseline), K draws) of logtrick's row ``name``."""
    sf = lt.ScoreFunction()
    pairs, rebar_draws = budget // 2, max(1, round(budget / 3))
    table = {
        "score function": (lambda: (sf, None), budget),
        "sf + leave-one-out": (lambda: (sf, lt.LeaveOneOut()), budget if budget >= 2 else 0),
        "sf + moving average 0.9": (lambda: (sf, lt.MovingAverage(0.9)), budget),
        "ARM": (lambda: (lt.ARM(), None), pairs),
        "DisARM": (lambda: (lt.DisARM(), None), pairs),
        "REBAR (untrained)": (lambda: (lt.Rebar(temperature=1.0, scale=1.0), None), rebar_draws),
        "RELAX (untrained)": (lambda: (lt.Relax(LogitsCV(ScalarCV())), None), budget),
        "Gumbel-softmax τ=1": (lambda: (lt.GumbelSoftmax(temperature=1.0), None), budget),
    }
    make, k = table[name]
    return (make, k) if k > 0 else None


TOY_ROWS = ["score function", "sf + leave-one-out", "sf + moving average 0.9", "ARM", "DisARM",
            "REBAR (untrained)", "RELAX (untrained)", "Gumbel-softmax τ=1"]  # fmt: skip
F_EVALS = {"ARM": 2, "DisARM": 2, "REBAR (untrained)": 3}  # f-evaluations per draw


def lt_toy_grads(name: str, budget: int, target: float, n: int, warmup: int) -> Tensor:
    """``(n,)`` gradient estimates (one per replica) of logtrick's row at theta = 0."""
    make, k = lt_toy(name, budget)  # type: ignore[misc]
    est, baseline = make()
    theta = torch.zeros(n, requires_grad=True)
    for _ in range(warmup + 1):
        theta.grad = None
        lt.expectation(toy_f(target), Bernoulli(logits=theta), k, est, baseline).sum().backward()
    return theta.grad.detach().clone()


def lt_toy_step(name: str, budget: int, target: float) -> Step:
    make, k = lt_toy(name, budget)  # type: ignore[misc]
    est, baseline = make()
    theta = torch.zeros(1, requires_grad=True)

    def step() -> None:
        theta.grad = None
        lt.expectation(toy_f(target), Bernoulli(logits=theta), k, est, baseline).sum().backward()

    return step


# --- Pyro ---


def pyro_toy(theta: Tensor, target: float, samples: int, beta: float | None) -> Callable[[], None]:
    """One ``loss_and_grads`` call of TraceGraph_ELBO computing grad E[(b - t)^2] into theta."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import TraceGraph_ELBO

    infer = {} if beta is None else {"baseline": {"use_decaying_avg_baseline": True,
                                                  "baseline_beta": beta}}  # fmt: skip

    def model() -> None:
        with pyro.plate("replicas", theta.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(logits=theta.detach()))
            pyro.factor("f", -((b - target) ** 2))

    def guide() -> None:
        with pyro.plate("replicas", theta.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=theta), infer=infer)

    elbo = TraceGraph_ELBO(num_particles=samples, vectorize_particles=samples > 1,
                           max_plate_nesting=1)  # fmt: skip

    def step() -> None:
        theta.grad = None
        elbo.loss_and_grads(model, guide)

    return step


PYRO_ROWS = {"score function": None, "sf + moving average 0.9": 0.9}


def pyro_toy_grads(name: str, budget: int, target: float, n: int, warmup: int) -> Tensor:
    import pyro

    pyro.clear_param_store()
    theta = torch.zeros(n, requires_grad=True)
    step = pyro_toy(theta, target, budget, PYRO_ROWS[name])
    for _ in range(warmup + 1):
        step()
    return theta.grad.detach().clone()


def pyro_toy_step(name: str, budget: int, target: float) -> Step:
    import pyro

    pyro.clear_param_store()
    return pyro_toy(torch.zeros(1, requires_grad=True), target, budget, PYRO_ROWS[name])


# --- Storchastic (phase B) ---


def storch_method(name: str, budget: int) -> object | None:
    import storch.method as sm

    pairs, rebar_draws = budget // 2, max(1, round(budget / 3))
    if name == "score function":
        return sm.ScoreFunction("b", n_samples=budget)
    if name == "sf + leave-one-out":
        return sm.ScoreFunction("b", n_samples=budget, baseline_factory="batch_average") \
            if budget >= 2 else None  # fmt: skip
    if name == "sf + moving average 0.9":
        return sm.ScoreFunction("b", n_samples=budget, baseline_factory="moving_average",
                                exponential_decay=0.9)  # fmt: skip
    if name in ("ARM", "DisARM"):
        return getattr(sm, name)("b", n_samples=pairs) if pairs else None
    if name == "REBAR (untrained)":
        return sm.REBAR("b", n_samples=rebar_draws)
    if name == "RELAX (untrained)":
        return sm.RELAX("b", n_samples=budget, c_phi=ScalarCV())
    return sm.GumbelSoftmax("b", n_samples=budget, initial_temperature=1.0)


# Storchastic's moving average is shared across a plate, and DisARM/REBAR/RELAX refuse a plate
# ("expected 2 plate dimensions"): these rows are measured one estimate at a time.
STORCH_LOOP = {"sf + moving average 0.9", "DisARM", "REBAR (untrained)", "RELAX (untrained)"}


def storch_toy_call(method: object, theta: Tensor, target: float, plate: bool) -> None:
    import storch

    theta.grad = None
    logits = storch.denote_independent(theta, 0, "replicas") if plate else theta
    b = method(Bernoulli(logits=logits))
    b = b.float() if b.dtype == torch.bool else b
    cost = (b - target) ** 2
    storch.add_cost(cost if plate else cost.sum(-1), "f")
    storch.backward()


def storch_toy_grads(name: str, budget: int, target: float, n: int, warmup: int) -> Tensor:
    method = storch_method(name, budget)
    if name not in STORCH_LOOP:  # one call, n replicas; the plate mean divides by n
        theta = torch.zeros(n, requires_grad=True)
        storch_toy_call(method, theta, target, plate=True)
        return theta.grad.detach() * n
    theta, grads = torch.zeros(1, requires_grad=True), []
    for i in range(warmup + n):
        storch_toy_call(method, theta, target, plate=False)
        if i >= warmup:
            grads.append(theta.grad.detach().clone())
    return torch.cat(grads)


def storch_toy_step(name: str, budget: int, target: float) -> Step:
    method, theta = storch_method(name, budget), torch.zeros(1, requires_grad=True)
    return lambda: storch_toy_call(method, theta, target, plate=False)


# --- tables ---

SYSTEMS = {
    "logtrick": (lt_toy_grads, lambda name, k: lt_toy(name, k) is not None),
    "Pyro": (pyro_toy_grads, lambda name, k: name in PYRO_ROWS),
    "Storchastic": (storch_toy_grads, lambda name, k: storch_method(name, k) is not None),
}


def toy_variances(systems: list[str], sizes: dict[str, int], results: dict) -> None:
    """Fill ``results[(t, K, row, system)] = (mean, se, var, se_var)``."""
    for target in TARGETS:
        for budget in BUDGETS:
            for row in TOY_ROWS:
                for system in systems:
                    grads_fn, has = SYSTEMS[system]
                    if not has(row, budget):
                        continue
                    loop = system == "Storchastic" and row in STORCH_LOOP
                    stateful = row == "sf + moving average 0.9"
                    n = sizes["loop"] if loop else sizes["stateful" if stateful else "vector"]
                    torch.manual_seed(zlib.crc32(f"{target}{budget}{row}{system}".encode()))
                    g = grads_fn(row, budget, target, n, sizes["warmup"] if stateful else 0)
                    results[(target, budget, row, system)] = var_stats(g)


def f_evals(row: str, budget: int) -> int:
    if row in ("ARM", "DisARM"):
        return 2 * (budget // 2)
    if row == "REBAR (untrained)":
        return 3 * max(1, round(budget / 3))
    return budget


def toy_variance_table(results: dict) -> None:
    for target in TARGETS:
        exact = (1 - 2 * target) / 4
        emit(
            f"\n**t = {target}** (exact gradient {exact:.4g}). Variance of one estimate ± SE; "
            f"z = (mean − exact)/SE; Δ = (var − logtrick's var)/SE of the difference.\n"
        )
        emit("| K | estimator | f-evals | logtrick var (z) | Pyro var (z) [Δ] "
             "| Storchastic var (z) [Δ] | logtrick var × evals |")  # fmt: skip
        emit("|---:|---|---:|---:|---:|---:|---:|")
        for budget in BUDGETS:
            for row in TOY_ROWS:
                cells, ref = [], results.get((target, budget, row, "logtrick"))
                for system in SYSTEMS:
                    r = results.get((target, budget, row, system))
                    if r is None:
                        cells.append("—")
                        continue
                    mean, se, var, se_var = r
                    z = bias_z(mean, se, exact)
                    text = f"{var:.3g} ± {se_var:.2g} ({z:+.1f})"
                    if system != "logtrick" and ref is not None:
                        d = math.hypot(se_var, ref[3])
                        text += f" [{(var - ref[2]) / d:+.1f}]" if d > 0 else " [—]"
                    cells.append(text)
                if all(c == "—" for c in cells):
                    continue
                work = "—" if ref is None else f"{ref[2] * f_evals(row, budget):.3g}"
                emit(f"| {budget} | {row} | {f_evals(row, budget)} | " + " | ".join(cells)
                     + f" | {work} |")  # fmt: skip


def toy_times(system: str, repeats: int) -> dict[tuple[int, str], tuple[float, float]]:
    """Median µs per step (single theta, t = 0.45) of logtrick and ``system``, interleaved."""
    step_fns = {"Pyro": pyro_toy_step, "Storchastic": storch_toy_step}
    out = {}
    for budget in BUDGETS:
        for row in TOY_ROWS:
            if lt_toy(row, budget) is None or not SYSTEMS[system][1](row, budget):
                continue
            steps = {"logtrick": lt_toy_step(row, budget, 0.45),
                     system: step_fns[system](row, budget, 0.45)}  # fmt: skip
            t = timed(steps, repeats)
            out[(budget, row)] = (t["logtrick"] * 1e6, t[system] * 1e6)
    return out


def toy_time_table(times: dict[str, dict]) -> None:
    emit("\nTime per step (µs, median; single theta, t = 0.45; each pair interleaved in the same "
         "run; phase A without, phase B with Storchastic imported):\n")  # fmt: skip
    emit("| K | estimator | logtrick (A) | Pyro (A) | ratio | logtrick (B) | Storchastic (B) "
         "| ratio |")  # fmt: skip
    emit("|---:|---|---:|---:|---:|---:|---:|---:|")
    keys = sorted(
        {k for d in times.values() for k in d}, key=lambda k: (k[0], TOY_ROWS.index(k[1]))
    )
    for key in keys:
        cells = []
        for system in ("Pyro", "Storchastic"):
            pair = times.get(system, {}).get(key)
            cells += ["—"] * 3 if pair is None else [f"{pair[0]:.0f}", f"{pair[1]:.0f}",
                                                     f"{pair[1] / pair[0]:.1f}×"]  # fmt: skip
        emit(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")


# --- training at t = 0.499 ---

TRAIN_ROWS = [("score function", 4), ("sf + moving average 0.9", 1), ("sf + leave-one-out", 4),
              ("ARM", 4), ("DisARM", 4), ("REBAR (untrained)", 3), ("RELAX (untrained)", 4),
              ("Gumbel-softmax τ=1", 4)]  # fmt: skip


def lt_train(row: str, budget: int, seeds: int, steps: int, target: float) -> Tensor:
    make, k = lt_toy(row, budget)  # type: ignore[misc]
    est, baseline = make()
    theta = torch.zeros(seeds, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.01)
    cv = list(est.parameters()) if isinstance(est, nn.Module) else []
    cv_opt = torch.optim.Adam(cv, lr=0.01) if cv else None
    for _ in range(steps):
        opt.zero_grad()
        loss = lt.expectation(toy_f(target), Bernoulli(logits=theta), k, est, baseline).sum()
        if cv_opt is not None:  # REBAR / RELAX: train the control variate on the variance
            cv_opt.zero_grad()
            est.backward(loss, [theta])
            cv_opt.step()
        else:
            loss.backward()
        opt.step()
    return theta.detach()


def peer_train(system: str, row: str, budget: int, seeds: int, steps: int, target: float) -> Tensor:
    theta = torch.zeros(seeds, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.01)
    if system == "Pyro":
        import pyro

        pyro.clear_param_store()
        call = pyro_toy(theta, target, budget, PYRO_ROWS[row])
    else:
        method = storch_method(row, budget)
        call = lambda: storch_toy_call(method, theta, target, plate=True)  # noqa: E731
    for _ in range(steps):
        opt.zero_grad()
        call()
        opt.step()
    return theta.detach()


def train_rows(systems: list[str], seeds: int, steps: int, results: dict) -> None:
    for row, budget in TRAIN_ROWS:
        for system in systems:
            peer = system != "logtrick"
            if peer and (
                not SYSTEMS[system][1](row, budget)
                or (system == "Storchastic" and row in STORCH_LOOP)
            ):
                continue  # Storchastic's loop-only rows: one run per seed is too slow
            torch.manual_seed(0)
            start = time.perf_counter()
            if peer:
                theta = peer_train(system, row, budget, seeds, steps, 0.499)
            else:
                theta = lt_train(row, budget, seeds, steps, 0.499)
            results[(row, system)] = (theta, time.perf_counter() - start)


def train_table(results: dict, seeds: int, steps: int) -> None:
    emit(
        f"\nAdam (lr 0.01) from θ = 0 at t = 0.499, {steps} steps, {seeds} seeds at once "
        f"(θ has one entry per seed). Right way: θ < 0 (the exact gradient is positive).\n"
    )
    emit("| estimator | K | system | final θ mean (min, max) | right way | seconds |")
    emit("|---|---:|---|---:|---:|---:|")
    for (row, system), (theta, secs) in results.items():
        budget = dict(TRAIN_ROWS)[row]
        name = row.replace("(untrained)", "(trained c)") if system == "logtrick" else row
        emit(f"| {name} | {budget} | {system} | {float(theta.mean()):.2f} "
             f"({float(theta.min()):.2f}, {float(theta.max()):.2f}) | "
             f"{float((theta < 0).float().mean()):.0%} | {secs:.1f} |")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Problem 3: Gaussian functions, score function in logtrick and Pyro

GAUSS = [(name, k) for name in ("square", "exp", "cos") for k in (-2.0, -1.0, 0.0, 1.0, 2.0)
         if not (name == "exp" and k < 0)]  # fmt: skip


def pyro_gauss(mu: Tensor, sigma: Tensor, f: Callable[[Tensor], Tensor]) -> Step:
    import pyro
    import pyro.distributions as dist
    from pyro.infer import TraceGraph_ELBO

    def model() -> None:
        with pyro.plate("replicas", mu.shape[0]):
            x = pyro.sample("x", dist.Normal(mu.detach(), sigma.detach()))
            pyro.factor("f", -f(x))

    def guide() -> None:
        with pyro.plate("replicas", mu.shape[0]):
            pyro.sample("x", dist.Normal(mu, sigma).has_rsample_(False))

    elbo = TraceGraph_ELBO(max_plate_nesting=1)

    def step() -> None:
        mu.grad = sigma.grad = None
        elbo.loss_and_grads(model, guide)

    return step


def lt_gauss(mu: Tensor, sigma: Tensor, f: Callable[[Tensor], Tensor]) -> Step:
    def step() -> None:
        mu.grad = sigma.grad = None
        lt.expectation(f, Normal(mu, sigma), 1, "score_function").sum().backward()

    return step


def gauss_grads(make: Callable[..., Step], f: Callable[[Tensor], Tensor], n: int,
                seed: int) -> Tensor:  # fmt: skip
    """``(n, 2)`` one-sample score-function estimates of (∂μ, ∂σ) at μ = σ = 1."""
    mu, sigma = torch.ones(n, requires_grad=True), torch.ones(n, requires_grad=True)
    torch.manual_seed(seed)
    make(mu, sigma, f)()
    return torch.stack([mu.grad, sigma.grad], 1)


def gauss_table(n: int, repeats: int) -> None:
    emit(
        f"\nx ~ N(1, 1), score function, one sample per estimate, R = {n} estimates per cell "
        f"and system (independent seeds); Δ = (Pyro − logtrick)/SE of the difference; same "
        f"draws: max |g_logtrick − g_Pyro| over R estimates drawn from one seed in both; time: "
        f"µs per step (median, interleaved, single (μ, σ)).\n"
    )
    emit("| f | k | Var ∂μ logtrick | Var ∂μ Pyro [Δ] | Var ∂σ logtrick | Var ∂σ Pyro [Δ] "
         "| same draws | µs logtrick | µs Pyro |")  # fmt: skip
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (name, k) in enumerate(GAUSS):
        f = lt.problems.gaussian_function(name, k)
        g_lt, g_py = gauss_grads(lt_gauss, f, n, 2 * i), gauss_grads(pyro_gauss, f, n, 2 * i + 1)
        same = (gauss_grads(pyro_gauss, f, n, 2 * i) - g_lt).abs().max()
        one = {s: make(torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True), f)
               for s, make in (("logtrick", lt_gauss), ("Pyro", pyro_gauss))}  # fmt: skip
        t = timed(one, repeats)
        cells = []
        for j in range(2):
            a, b = var_stats(g_lt[:, j]), var_stats(g_py[:, j])
            cells += [
                f"{a[2]:.4g} ± {a[3]:.2g}",
                f"{b[2]:.4g} ± {b[3]:.2g} [{(b[2] - a[2]) / math.hypot(a[3], b[3]):+.1f}]",
            ]
        emit(
            f"| {lt.problems.GAUSSIAN_FUNCTIONS[name]} | {k:g} | "
            + " | ".join(cells)
            + f" | {float(same):.1g} | {t['logtrick'] * 1e6:.0f} | {t['Pyro'] * 1e6:.0f} |"
        )


# ---------------------------------------------------------------------------------------------
# Problem 2: discrete VAE on digits


def digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x = (load_digits().data >= 8).astype("float32")
    train, test = train_test_split(x, random_state=0)
    return torch.as_tensor(train), torch.as_tensor(test)


class VAE(nn.Module):
    """Bernoulli latents b (L), learned prior logits, encoder x -> logits q(b|x), decoder b -> x."""

    def __init__(self, latents: int, hidden: bool, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        if hidden:
            self.enc = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, latents))
            self.dec = nn.Sequential(nn.Linear(latents, 128), nn.Tanh(), nn.Linear(128, 64))
        else:
            self.enc, self.dec = nn.Linear(64, latents), nn.Linear(latents, 64)
        self.prior = nn.Parameter(torch.zeros(latents))

    def cost(self, x: Tensor, q_logits: Tensor) -> Callable[[Tensor], Tensor]:
        """b (K, B, L), relaxed or not -> -log p(x|b) - log p(b) + log q(b|x), (K, B); log q
        with detached encoder logits (its own gradient has mean zero; Pyro drops it too)."""

        def f(b: Tensor) -> Tensor:
            nll = F.binary_cross_entropy_with_logits(
                self.dec(b), x.expand(b.shape[0], *x.shape), reduction="none"
            ).sum(-1)
            prior = self.prior.expand_as(b)
            log_p = -F.binary_cross_entropy_with_logits(prior, b, reduction="none").sum(-1)
            log_q = -F.binary_cross_entropy_with_logits(
                q_logits.detach().expand_as(b), b, reduction="none").sum(-1)  # fmt: skip
            return nll - log_p + log_q

        return f

    @torch.no_grad()
    def neg_elbo(self, x: Tensor, samples: int = 10) -> float:
        gen = torch.Generator().manual_seed(1234)
        q_logits = self.enc(x)
        probs = torch.sigmoid(q_logits)
        b = (torch.rand((samples, *probs.shape), generator=gen) < probs).float()
        return float(self.cost(x, q_logits)(b).mean())


def lt_vae_step(vae: VAE, name: str) -> Callable[[Tensor], None]:
    est, base, k = {
        "sf + moving average 0.9 (K=1)": (lt.ScoreFunction(), lt.MovingAverage(0.9), 1),
        "RLOO K=2": (lt.ScoreFunction(), lt.LeaveOneOut(), 2),
        "RLOO K=4": (lt.ScoreFunction(), lt.LeaveOneOut(), 4),
        "DisARM (1 pair)": (lt.DisARM(), None, 1),
        "REBAR (K=1, trained η, λ)": (lt.Rebar(temperature=0.5), None, 1),
    }[name]
    params = list(vae.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    cv_opt = torch.optim.Adam(est.parameters(), lr=3e-3) if isinstance(est, lt.Rebar) else None

    def step(x: Tensor) -> None:
        opt.zero_grad()
        q_logits = vae.enc(x)
        loss = lt.expectation(vae.cost(x, q_logits), Bernoulli(logits=q_logits), k, est,
                              base).mean()  # fmt: skip
        if cv_opt is not None:
            cv_opt.zero_grad()
            est.backward(loss, params)
            cv_opt.step()
        else:
            loss.backward()
        opt.step()

    return step


def pyro_vae_step(vae: VAE, name: str) -> Callable[[Tensor], None]:
    import pyro
    import pyro.distributions as dist
    from pyro.infer import TraceGraph_ELBO

    pyro.clear_param_store()
    infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}

    def model(x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            prior = vae.prior.expand(x.shape[0], -1)
            b = pyro.sample("b", dist.Bernoulli(logits=prior).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=vae.dec(b)).to_event(1), obs=x)

    def guide(x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=vae.enc(x)).to_event(1), infer=infer)

    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)  # the same optimiser as logtrick's runs
    elbo = TraceGraph_ELBO()

    def step(x: Tensor) -> None:  # Pyro's loss sums over the batch: Adam is invariant to scale
        opt.zero_grad()
        elbo.loss_and_grads(model, guide, x)
        opt.step()

    return step


def storch_vae_step(vae: VAE, name: str) -> Callable[[Tensor], None]:
    import storch
    from storch.method import ScoreFunction

    method = ScoreFunction("b", n_samples=4, baseline_factory="batch_average")
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)

    def log_bernoulli(logits: Tensor, v: Tensor) -> Tensor:
        return (v * F.logsigmoid(logits) + (1 - v) * F.logsigmoid(-logits)).sum(-1)

    def step(x: Tensor) -> None:
        opt.zero_grad()
        xs = storch.denote_independent(x, 0, "data")
        q_logits = vae.enc(xs)
        b = method(Bernoulli(logits=q_logits))
        cost = (-log_bernoulli(vae.dec(b), xs) - log_bernoulli(vae.prior, b)
                + log_bernoulli(q_logits.detach(), b))  # fmt: skip
        storch.add_cost(cost, "neg_elbo")
        storch.backward()
        opt.step()

    return step


VAE_RUNS = {
    "logtrick": ["sf + moving average 0.9 (K=1)", "RLOO K=2", "RLOO K=4", "DisARM (1 pair)",
                 "REBAR (K=1, trained η, λ)"],
    "Pyro": ["TraceGraph_ELBO + decaying average 0.9 (K=1)"],
    "Storchastic": ["ScoreFunction + batch_average (K=4)"],
}  # fmt: skip
VAE_CONFIGS = [(32, False), (64, False), (32, True), (64, True)]
VAE_STEP = {"logtrick": lt_vae_step, "Pyro": pyro_vae_step, "Storchastic": storch_vae_step}


def vae_run(system: str, name: str, latents: int, hidden: bool, data: tuple[Tensor, Tensor],
            seconds: float, steps: int) -> dict[str, float]:  # fmt: skip
    """Train until both ``seconds`` of training time and ``steps`` steps have passed."""
    train, test = data
    vae = VAE(latents, hidden)
    step = VAE_STEP[system](vae, name)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    elapsed, n, times, out = 0.0, 0, [], {}
    while elapsed < seconds or n < steps:
        x = train[torch.randint(0, train.shape[0], (50,), generator=gen)]
        start = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - start)
        elapsed, n = elapsed + times[-1], n + 1
        if n == steps:
            out["train@steps"], out["test@steps"] = vae.neg_elbo(train), vae.neg_elbo(test)
        if elapsed >= seconds and "test@time" not in out:
            out["train@time"], out["test@time"] = vae.neg_elbo(train), vae.neg_elbo(test)
            out["steps@time"] = n
    out["ms"] = statistics.median(times) * 1e3
    return out


def vae_rows(systems: list[str], seconds: float, steps: int, results: dict) -> None:
    data = digits()
    for latents, hidden in VAE_CONFIGS:
        for system in systems:
            for name in VAE_RUNS[system]:
                results[(latents, hidden, system, name)] = vae_run(
                    system, name, latents, hidden, data, seconds, steps)  # fmt: skip


def vae_table(results: dict, seconds: float, steps: int) -> None:
    emit(
        f"\nBatches of 50, Adam lr 3e-3, seed 0 (one run per cell). −ELBO in nats per image "
        f"(10 samples per image, fixed evaluation seed) after {steps} steps and after "
        f"{seconds:g} s of training (evaluation time excluded); ms: median time per step.\n"
    )
    emit(
        f"| latents | model | system | estimator | ms/step | steps in {seconds:g} s | train "
        f"@{steps} | test @{steps} | train @{seconds:g} s | test @{seconds:g} s |"
    )
    emit("|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    for (latents, hidden, system, name), r in results.items():
        emit(
            f"| {latents} | {'1 hidden layer' if hidden else 'linear'} | {system} | {name} | "
            f"{r['ms']:.1f} | {r['steps@time']} | {r['train@steps']:.2f} | "
            f"{r['test@steps']:.2f} | {r['train@time']:.2f} | {r['test@time']:.2f} |"
        )


def vae_verdict(results: dict) -> None:
    emit("\nBest test −ELBO at the wall-clock budget, per configuration (logtrick's unbiased "
         "estimators vs every peer's best):\n")  # fmt: skip
    emit("| latents | model | logtrick best | peer best | logtrick lower? |")
    emit("|---:|---|---|---|:---:|")
    for latents, hidden in VAE_CONFIGS:
        rows = {k: v for k, v in results.items() if k[:2] == (latents, hidden)}
        mine = min(((v["test@time"], k[3]) for k, v in rows.items() if k[2] == "logtrick"))
        peers = [(v["test@time"], f"{k[2]}: {k[3]}") for k, v in rows.items() if k[2] != "logtrick"]
        if not peers:
            continue
        best = min(peers)
        emit(
            f"| {latents} | {'1 hidden layer' if hidden else 'linear'} | {mine[1]}: "
            f"{mine[0]:.2f} | {best[1]}: {best[0]:.2f} | {'yes' if mine[0] < best[0] else 'no'} |"
        )


# ---------------------------------------------------------------------------------------------


def versions() -> str:
    import pyro

    out = [f"Python {platform.python_version()}", f"torch {torch.__version__}",
           f"pyro-ppl {pyro.__version__}"]  # fmt: skip
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out.append(f"storchastic {version('storchastic')}")
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="VAE wall-clock per run")
    parser.add_argument("--steps", type=int, default=300, help="VAE fixed number of steps")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args()
    q = args.quick
    sizes = {
        "vector": 2000 if q else 100_000,
        "stateful": 1000 if q else 10_000,
        "loop": 50 if q else 250,
        "warmup": 50,
    }
    timing, seeds, train_steps = (10, 4, 50) if q else (100, 32, 2000)
    secs, steps = (1.0, 20) if q else (args.seconds, args.steps)
    toy, times, train, vae = {}, {}, {}, {}
    progress("phase A (logtrick, Pyro): toy variances")
    toy_variances(["logtrick", "Pyro"], sizes, toy)
    progress("toy times")
    times["Pyro"] = toy_times("Pyro", timing)
    progress("toy training")
    train_rows(["logtrick", "Pyro"], seeds, train_steps, train)
    progress("Gaussian functions")
    gauss_table(sizes["vector"], timing)
    gauss_lines = MD[:]
    MD.clear()
    progress("VAE")
    vae_rows(["logtrick", "Pyro"], secs, steps, vae)
    storch_error = None
    try:  # phase B: Storchastic patches torch on import
        import storch  # noqa: F401
    except Exception as err:  # report and go on with Pyro alone
        storch_error = f"{type(err).__name__}: {err}"
    if storch_error is None:
        progress("phase B (Storchastic): toy variances")
        toy_variances(["Storchastic"], sizes, toy)
        progress("toy times")
        times["Storchastic"] = toy_times("Storchastic", timing)
        progress("toy training")
        train_rows(["Storchastic"], seeds, train_steps, train)
        progress("VAE")
        vae_rows(["Storchastic"], secs, steps, vae)
    progress("done")

    emit("## Estimators next to Pyro and Storchastic\n")
    emit(
        f"```\npython benchmarks/estimators_vs_peers.py{' --quick' if q else ''}   "
        f"# {time.strftime('%Y-%m-%d')}, {(time.perf_counter() - START) / 60:.1f} min\n```\n"
    )
    emit(
        f"{versions()}; {platform.machine()}, torch.set_num_threads(1)."
        + (f" Storchastic failed to import: `{storch_error}`." if storch_error else "")
    )
    emit("\n### 1. Bernoulli toy: variance at θ = 0\n")
    toy_variance_table(toy)
    toy_time_table(times)
    emit("\n### 1b. Bernoulli toy: training at t = 0.499\n")
    train_table(train, seeds, train_steps)
    emit("\n### 2. Discrete VAE on digits\n")
    vae_table(vae, secs, steps)
    vae_verdict(vae)
    emit("\n### 3. Gaussian functions: score function\n")
    for line in gauss_lines:
        emit(line)
    print("\n".join(MD))
    if not q:
        OUT.write_text("\n".join(MD) + "\n")


if __name__ == "__main__":
    main()
