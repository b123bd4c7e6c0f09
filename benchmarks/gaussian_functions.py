r"""Per-sample gradient variance on the Gaussian test functions of Mohamed et al. (2020), section 3.

x ~ N(mu=1, sigma=1), f in {(x-k)^2, exp(-k x^2), cos(k x)}, k in {-2, -1, 0, 1, 2}. For each
estimator the per-sample variance of the mu- and sigma-gradients is measured with
``lt.diagnostics.gradient_variance`` (R estimates drawn in one vectorised pass) and compared with
the exact value by numerical quadrature (``scipy.integrate.quad``); "within 3 SE" uses the
standard error of a sample variance, estimated from the fourth central moment.

Estimators (per-sample term g(x) for parameter theta, score s = d log N(x; mu, sigma) / d theta):

* score function, K = 1:                g = f(x) s
* score function + exact mean, K = 1:   g = (f(x) - E[f]) s   (the constant baseline b = E[f])
* score function + leave-one-out, K=4:  per-sample variance = K Var[estimate]; exact value from
  the U-statistic with kernel h = (f1 - f2)(s1 - s2) / 2 (Hoeffding):
  K Var = ((K - 2) V_c + 2 zeta_2) / (K - 1), V_c = Var[(f - E f) s],
  zeta_2 = E[f^2 s^2]/2 + E[f^2] E[s^2]/2 - E[f] E[f s^2]
* pathwise, K = 1:                      g = f'(x) dx/dtheta, dx/dmu = 1, dx/dsigma = (x - mu)/sigma

For exp(-k x^2) with k < 0 the expectation itself is infinite (k <= -1/2 at sigma = 1): no row.

Run:  python benchmarks/gaussian_functions.py [--repeats 200000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import torch
from scipy import integrate

from logtrick.diagnostics import gradient_variance
from logtrick.problems import GAUSSIAN_FUNCTIONS, gaussian_problem

MU, SIGMA = 1.0, 1.0
KS = (-2.0, -1.0, 0.0, 1.0, 2.0)
LOO_K = 4

Fn = Callable[[float], float]


def _np_function(name: str, k: float) -> tuple[Fn, Fn]:
    """f and f' as scalar functions (for quadrature)."""
    if name == "square":
        return (lambda x: (x - k) ** 2), (lambda x: 2 * (x - k))
    if name == "exp":
        return (lambda x: math.exp(-k * x * x)), (lambda x: -2 * k * x * math.exp(-k * x * x))
    return (lambda x: math.cos(k * x)), (lambda x: -k * math.sin(k * x))


def _expect(g: Fn) -> float:
    """E[g(eps)] for eps ~ N(0, 1), by adaptive quadrature."""
    pdf = lambda e: math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)  # noqa: E731
    value, _ = integrate.quad(lambda e: g(e) * pdf(e), -np.inf, np.inf, epsabs=1e-11, limit=400)
    return value


def exact_variances(name: str, k: float) -> dict[str, tuple[float, float]]:
    """Exact per-sample variances (mu, sigma) of each estimator, by quadrature."""
    f, df = _np_function(name, k)
    x = lambda e: MU + SIGMA * e  # noqa: E731
    scores = (lambda e: e / SIGMA, lambda e: (e * e - 1) / SIGMA)
    paths = (lambda e: 1.0, lambda e: e)
    mean_f, mean_f2 = _expect(lambda e: f(x(e))), _expect(lambda e: f(x(e)) ** 2)
    out: dict[str, list[float]] = {"sf": [], "sf+mean": [], "sf+loo": [], "pathwise": []}
    for s, dx in zip(scores, paths):
        grad = _expect(lambda e, s=s: f(x(e)) * s(e))
        a = _expect(lambda e, s=s: f(x(e)) ** 2 * s(e) ** 2)
        fs2 = _expect(lambda e, s=s: f(x(e)) * s(e) ** 2)
        fisher = _expect(lambda e, s=s: s(e) ** 2)
        v_c = a - 2 * mean_f * fs2 + mean_f**2 * fisher - grad**2
        zeta2 = 0.5 * a + 0.5 * mean_f2 * fisher - mean_f * fs2
        pw = _expect(lambda e, dx=dx: (df(x(e)) * dx(e)) ** 2) - grad**2
        out["sf"].append(a - grad**2)
        out["sf+mean"].append(v_c)
        out["sf+loo"].append(((LOO_K - 2) * v_c + 2 * zeta2) / (LOO_K - 1))
        out["pathwise"].append(pw)
    return {key: (v[0], v[1]) for key, v in out.items()}


def measure(name: str, k: float, repeats: int, seed: int) -> dict[str, tuple]:
    """Measured per-sample variances and their SEs, (mu, sigma), per estimator."""
    problem = gaussian_problem(name, k, MU, SIGMA)
    mean = problem.exact_value()
    setups = {
        "sf": ("score_function", None, 1),
        "sf+mean": ("score_function", mean, 1),
        "sf+loo": ("score_function", "leave_one_out", LOO_K),
        "pathwise": ("pathwise", None, 1),
    }
    out = {}
    for i, (key, (est, baseline, k_samples)) in enumerate(setups.items()):
        s = gradient_variance(problem.f, problem.dist_fn, problem.params, k_samples, est,
                              baseline, repeats, vectorize=True, seed=seed + i)  # fmt: skip
        out[key] = (s.per_sample_variance.tolist(), s.per_sample_variance_se.tolist())
    return out


LABELS = {
    "sf": "score function",
    "sf+mean": "sf + b=E[f]",
    "sf+loo": f"sf + leave-one-out (K={LOO_K})",
    "pathwise": "pathwise",
}


def _cell(measured: float, se: float, exact: float) -> tuple[str, float]:
    """The table cell and z = |measured - exact| / SE (0 when both are exactly 0)."""
    exact = 0.0 if abs(exact) < 1e-12 else exact  # quadrature round-off around an exact zero
    diff = abs(measured - exact)
    z = 0.0 if diff <= 1e-9 * max(1.0, abs(exact)) else (diff / se if se > 0 else math.inf)
    return f"{measured:.4g} ± {se:.2g} | {exact:.4g}", z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(f"x ~ N({MU:g}, {SIGMA:g}^2); per-sample variance: measured ± SE | exact (quadrature); "
          f"R = {args.repeats} estimates each\n")  # fmt: skip
    print("| f | k | estimator | Var ∂/∂μ: measured ± SE \\| exact | Var ∂/∂σ: measured ± SE "
          "\\| exact | within 3 SE |")  # fmt: skip
    print("|---|---:|---|---:|---:|:---:|")
    zs: list[float] = []
    for row, (name, formula) in enumerate(GAUSSIAN_FUNCTIONS.items()):
        for j, k in enumerate(KS):
            if name == "exp" and 1 + 2 * k * SIGMA**2 <= 0:
                print(f"| {formula} | {k:g} | all | E[f] = ∞ | E[f] = ∞ | n/a |")
                continue
            exact = exact_variances(name, k)
            seed = args.seed + 100 * (len(KS) * row + j)  # independent draws for every (f, k)
            measured = measure(name, k, args.repeats, seed)
            for key, label in LABELS.items():
                (m_mu, m_sigma), (se_mu, se_sigma) = measured[key]
                c_mu, z_mu = _cell(m_mu, se_mu, exact[key][0])
                c_sigma, z_sigma = _cell(m_sigma, se_sigma, exact[key][1])
                zs += [z_mu, z_sigma]
                z = max(z_mu, z_sigma)
                mark = "yes" if z <= 3 else f"**no** (z = {z:.2f})"
                print(f"| {formula} | {k:g} | {label} | {c_mu.replace('|', chr(92) + '|')} | "
                      f"{c_sigma.replace('|', chr(92) + '|')} | {mark} |")  # fmt: skip
    # Bonferroni: a 1% family-wise failure rate spread over all checks.
    z_family = NormalDist().inv_cdf(1 - 0.01 / (2 * len(zs)))
    print(f"\nwithin 3 SE: {sum(z <= 3 for z in zs)} / {len(zs)} (expected failures at 3 SE: "
          f"about {0.0027 * len(zs):.1f}); within the Bonferroni bound z = {z_family:.2f} "
          f"(1% family-wise): {sum(z <= z_family for z in zs)} / {len(zs)}; largest z = "
          f"{max(zs):.2f}; {time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
