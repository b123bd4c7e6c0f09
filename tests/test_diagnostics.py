"""Tests for logtrick.diagnostics: per-sample gradients, gradient variance, comparison tables."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch.distributions import Bernoulli, Normal

import logtrick as lt
from logtrick.diagnostics import (
    GradientStats,
    compare,
    format_table,
    gradient_variance,
    per_sample_gradients,
)
from logtrick.problems import bernoulli_problem, gaussian_problem


def _z(failure_rate: float, checks: int) -> float:
    """Two-sided z for a total failure rate spread over ``checks`` checks (Bonferroni)."""
    return NormalDist().inv_cdf(1.0 - failure_rate / (2 * checks))


class _Recorder:
    """A cost that remembers the samples it was evaluated on."""

    def __init__(self, f):
        self.f, self.x = f, None

    def __call__(self, x):
        self.x = x.detach().clone()
        return self.f(x)


# --- (a)/(c): per-sample gradients against the hand formula --------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_per_sample_score_function_leave_one_out_matches_hand_formula(seed: int) -> None:
    torch.manual_seed(seed)
    mu = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    log_sigma = torch.tensor([0.0, 0.5, -0.2], requires_grad=True)
    f = _Recorder(lambda x: (x**2).sum(-1))  # reduces the batch dim: one joint sample per row
    dist = Normal(mu, log_sigma.exp())
    g = per_sample_gradients(f, dist, [mu, log_sigma], 6, "score_function", "leave_one_out")
    x, sigma = f.x, log_sigma.detach().exp()
    cost = (x**2).sum(-1)
    b = (cost.sum() - cost) / 5
    eps = (x - mu.detach()) / sigma
    score = torch.cat([eps / sigma, eps**2 - 1], dim=1)  # d log p / d(mu, log sigma)
    expected = (cost - b)[:, None] * score
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-5)


def test_per_sample_pathwise_matches_hand_formula() -> None:
    torch.manual_seed(0)
    mu, sigma = torch.tensor(1.0, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    f = _Recorder(lambda x: x**2)
    g = per_sample_gradients(f, Normal(mu, sigma), [mu, sigma], 5, "pathwise")
    x = f.x
    eps = (x - 1.0) / 2.0
    torch.testing.assert_close(g, torch.stack([2 * x, 2 * x * eps], dim=1))


def test_per_sample_chunks_agree() -> None:
    mu = torch.tensor([0.5, -0.5], requires_grad=True)
    f = lambda x: (x - 1.0).pow(2)  # noqa: E731
    rows = []
    for chunk in (2, 1024):  # 5 samples in chunks of 2, 2, 1 and in one chunk
        torch.manual_seed(7)
        rows.append(per_sample_gradients(f, Normal(mu, 1.0), [mu], 5, chunk=chunk))
    torch.testing.assert_close(rows[0], rows[1])


@pytest.mark.parametrize("baseline", [None, "leave_one_out", "optimal_scale"])
def test_per_sample_rows_average_to_the_estimate(baseline: str | None) -> None:
    theta = torch.tensor([0.2, -0.4], requires_grad=True)
    b = lt.OptimalScale([theta]) if baseline == "optimal_scale" else baseline
    f = lambda x: (x - 0.45).pow(2).sum(-1)  # noqa: E731
    torch.manual_seed(3)
    g = per_sample_gradients(f, Bernoulli(logits=theta), [theta], 7, "score_function", b)
    torch.manual_seed(3)
    est = lt.expectation(f, Bernoulli(logits=theta), 7, "score_function", b)
    (expected,) = torch.autograd.grad(est, [theta])
    assert g.shape == (7, 2)
    torch.testing.assert_close(g.mean(0), expected)


# --- (b): measured variance against the exact values of Mohamed et al. (2020) ----------------


def test_gaussian_square_k0_per_sample_variance_matches_exact() -> None:
    # x ~ N(1, 1), f = x^2: exact per-sample variances (mu, sigma) are 30, 136 for the score
    # function and 4, 12 for the pathwise estimator (moments of the standard normal).
    # Failure rate 1e-3 over 4 checks (Bonferroni) -> z = 3.66.
    z = _z(1e-3, 4)
    problem = gaussian_problem("square", 0.0)
    exact = {"score_function": (30.0, 136.0), "pathwise": (4.0, 12.0)}
    for i, (name, values) in enumerate(exact.items()):
        stats = gradient_variance(
            problem.f,
            problem.dist_fn,
            problem.params,
            1,
            name,
            repeats=100_000,
            vectorize=True,
            seed=i,
        )
        for j, value in enumerate(values):
            err = abs(float(stats.per_sample_variance[j]) - value)
            assert err <= z * float(stats.per_sample_variance_se[j]), (name, j, stats)


def test_mean_gradient_is_unbiased_and_counts_evaluations() -> None:
    # Failure rate 1e-3 over 2 estimators (Bonferroni), one parameter each.
    z = _z(1e-3, 2)
    problem = bernoulli_problem(target=0.45, theta=0.3)
    exact = problem.exact_gradient()
    for i, baseline in enumerate([None, "leave_one_out"]):
        stats = gradient_variance(
            problem.f,
            problem.dist_fn,
            problem.params,
            4,
            "score_function",
            baseline,
            20_000,
            vectorize=True,
            seed=i,
        )
        assert isinstance(stats, GradientStats)
        assert abs(float(stats.mean[0] - exact[0])) <= z * float(stats.stderr[0])
        assert stats.f_evals == 4 and stats.samples == 4 and stats.repeats == 20_000


def test_loop_and_vectorized_agree_and_seed_reproduces() -> None:
    problem = gaussian_problem("cos", 1.0)
    args = (problem.f, problem.dist_fn, problem.params, 2, "score_function", None, 200)
    first = gradient_variance(*args, seed=5)
    again = gradient_variance(*args, seed=5)
    torch.testing.assert_close(first.variance, again.variance)
    torch.testing.assert_close(first.mean, again.mean)
    vec = gradient_variance(*args[:-1], 20_000, vectorize=True, seed=5)
    # Both estimate the same variance: difference within z * combined SE, failure rate 1e-3 over
    # 2 parameters -> z = 3.29.
    se = (first.variance_se**2 + vec.variance_se**2).sqrt()
    assert ((first.variance - vec.variance).abs() <= _z(1e-3, 2) * se).all()


def test_stateful_baseline_keeps_its_state_across_repeats() -> None:
    problem = gaussian_problem("square", 2.0)
    average = lt.MovingAverage(decay=0.5)
    stats = gradient_variance(
        problem.f, problem.dist_fn, problem.params, 4, "score_function", average, 30, warmup=5
    )
    assert average.steps == 35
    fresh = gradient_variance(
        problem.f,
        problem.dist_fn,
        problem.params,
        4,
        "score_function",
        "moving_average",
        30,
        seed=0,
    )
    assert math.isfinite(stats.total_variance) and math.isfinite(fresh.total_variance)


def test_trace_and_derived_quantities() -> None:
    problem = gaussian_problem("square", 1.0)
    s = gradient_variance(problem.f, problem.dist_fn, problem.params, 3, repeats=200, seed=0)
    assert s.total_variance == pytest.approx(float(s.variance.sum()))
    torch.testing.assert_close(s.per_sample_variance, 3 * s.variance)
    torch.testing.assert_close(s.variance_times_evals, 3 * s.variance)
    torch.testing.assert_close(s.stderr, (s.variance / 200).sqrt())
    assert s.seconds > 0 and (s.variance_se > 0).all()


# --- errors ----------------------------------------------------------------------------------


def test_errors_name_the_argument() -> None:
    problem = gaussian_problem()
    mu = torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"params\[0\]: expected requires_grad=True"):
        per_sample_gradients(problem.f, Normal(mu, 1.0), [mu], 3)
    with pytest.raises(ValueError, match="repeats"):
        gradient_variance(problem.f, problem.dist_fn, problem.params, repeats=2)
    with pytest.raises(TypeError, match="OptimalScale"):
        gradient_variance(
            problem.f,
            problem.dist_fn,
            problem.params,
            2,
            "score_function",
            lt.OptimalScale(problem.params),
            10,
            vectorize=True,
        )
    with pytest.raises(ValueError, match="dist_fn"):
        gradient_variance(
            problem.f,
            lambda p: Normal(p[0].sum(), p[1].sum()),
            problem.params,
            repeats=10,
            vectorize=True,
        )
    with pytest.raises(TypeError, match="problem"):
        compare(object(), {"sf": ("score_function", None)})
    with pytest.raises(ValueError, match="k"):
        gaussian_problem("exp", -1.0)


# --- comparison table ------------------------------------------------------------------------


def test_compare_and_format_table() -> None:
    problem = gaussian_problem("square", 0.0)
    estimators = {
        "score_function": ("score_function", None),
        "sf + leave_one_out": ("score_function", "leave_one_out"),
        "pathwise": ("pathwise", None),
    }
    rows = compare(problem, estimators, samples=4, repeats=150, warmup=0)
    assert [r.name for r in rows] == list(estimators)
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["estimator", "variance"] and len(lines) == 2 + 3
    assert all(any(line.startswith(name) for line in lines) for name in estimators)
    # Exact per-estimate traces (K=4): 166/4 = 41.5 (score function), 16/4 = 4 (pathwise): the
    # ordering is certain at R=150.
    assert rows[2].stats.total_variance < rows[0].stats.total_variance
    # A cost with dist_fn/params works too; the exact gradient is then unknown.
    mu = torch.tensor(0.0, requires_grad=True)
    rows = compare(
        lambda x: x**2,
        {"sf": ("score_function", None)},
        2,
        20,
        dist_fn=lambda p: Normal(p[0], 1.0),
        params=[mu],
    )
    assert rows[0].bias_z is None and format_table(rows).splitlines()[2].endswith("-")


# --- check_pathwise (issue 11, defect 8) ---------------------------------------------------------


@pytest.mark.slow
def test_check_pathwise_flags_a_step_and_passes_a_smooth_f() -> None:
    """f = x + 1[x > 0] under Normal(μ, σ): d/dμ E[f] = 1 + φ(μ/σ)/σ, but the pathwise estimator
    sees only the 1 (autograd cannot see the jump); f = x² is smooth. The check's own failure
    rate for the smooth f is 1e-3 (fixed seed)."""
    mu, sigma = torch.tensor(0.3, requires_grad=True), torch.tensor(1.0, requires_grad=True)

    def dist_fn(p: list) -> Normal:
        return Normal(p[0], p[1])

    step = lt.diagnostics.check_pathwise(
        lambda x: x + (x > 0).float(), dist_fn, [mu, sigma], alpha=1e-3, seed=0
    )
    assert step.biased and float(step.z[0]) > 6, step
    assert float(step.score_function[0]) == pytest.approx(1.0 + 0.3814, abs=0.1)
    assert float(step.pathwise[0]) == pytest.approx(1.0, abs=1e-6)
    smooth = lt.diagnostics.check_pathwise(lambda x: x**2, dist_fn, [mu, sigma], seed=0)
    assert not smooth.biased, smooth
    assert smooth.threshold == pytest.approx(_z(1e-3, 2))
    with pytest.raises(ValueError, match="samples: expected at least 2"):
        lt.diagnostics.check_pathwise(lambda x: x**2, dist_fn, [mu, sigma], samples=1)
