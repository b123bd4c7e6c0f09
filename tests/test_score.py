r"""Tests of ``lt.score`` and ``lt.fisher``: hand formulas, shapes, E[s] = 0, Cov[s] = F.

Tiers: (a) per-sample scores equal hand-derived formulas; (b) statistical checks of
:math:`\mathbb{E}[s] = 0` and of the empirical Fisher against its closed form, with tolerance
:math:`z\,\hat\sigma/\sqrt N` (failure rate per test stated below, Bonferroni over entries);
(c) ``score`` against a Python loop over ``torch.autograd.grad`` and ``fisher`` against the
mean outer product of the same draws.

Closed-form Fisher information (Lehmann & Casella, Theory of Point Estimation, 2.5):
Normal(loc, scale): diag(1/σ², 2/σ²); Bernoulli(logits): p(1−p); Categorical(logits):
diag(p) − p pᵀ; Poisson(rate): 1/λ; Exponential(rate): 1/λ².
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Exponential,
    MultivariateNormal,
    Normal,
    Poisson,
)

import logtrick as lt
from logtrick.scores import flatten_scores
from stats import assert_mean, z_bonferroni, z_scores

DT = torch.float64
# Failure rate of each statistical test (whole test, Bonferroni over its entries). There are 20
# statistical tests in this file, so a chance failure of the file has probability <= 2e-2.
ALPHA = 1e-3
N_DRAWS = 20_000


def t(*values: float) -> Tensor:
    """A float64 tensor."""
    return torch.tensor(values if len(values) != 1 else values[0], dtype=DT)


# --- (a) hand formulas and shapes ---------------------------------------------------------------


def test_normal_score_matches_hand_formula() -> None:
    """d/dμ = (x−μ)/σ², d/dσ = ((x−μ)²−σ²)/σ³ for batch (3,) and sample shape (5, 4)."""
    torch.manual_seed(0)
    loc, scale = t(0.3, -1.0, 2.0), t(0.5, 1.0, 2.5)
    x = torch.randn(5, 4, 3, dtype=DT)
    s_loc, s_scale = lt.score(lambda p: Normal(p[0], p[1]), [loc, scale], x)
    assert s_loc.shape == s_scale.shape == (5, 4, 3)
    torch.testing.assert_close(s_loc, (x - loc) / scale**2)
    torch.testing.assert_close(s_scale, ((x - loc) ** 2 - scale**2) / scale**3)


def test_bernoulli_logits_score_matches_hand_formula() -> None:
    """d/dθ log Bernoulli(x; logits θ) = x − σ(θ); param shape (2, 3), sample shape (7,)."""
    torch.manual_seed(1)
    theta = torch.randn(2, 3, dtype=DT)
    x = torch.randint(0, 2, (7, 2, 3)).to(DT)
    (s,) = lt.score(lambda p: Bernoulli(logits=p[0]), [theta], x)
    assert s.shape == (7, 2, 3)
    torch.testing.assert_close(s, x - torch.sigmoid(theta))


def test_categorical_logits_score_matches_hand_formula() -> None:
    """d/dθ log Categorical(x; logits θ) = onehot(x) − softmax(θ); integer samples (6, 2)."""
    torch.manual_seed(2)
    theta = torch.randn(2, 4, dtype=DT)
    x = torch.randint(0, 4, (6, 2))
    (s,) = lt.score(lambda p: Categorical(logits=p[0]), [theta], x)
    assert s.shape == (6, 2, 4)
    expected = torch.nn.functional.one_hot(x, 4).to(DT) - torch.softmax(theta, -1)
    torch.testing.assert_close(s, expected)


def test_poisson_and_exponential_scores_match_hand_formulas() -> None:
    """Poisson(rate λ): x/λ − 1; Exponential(rate λ): 1/λ − x."""
    torch.manual_seed(3)
    lam = t(0.5, 4.0)
    x = torch.poisson(torch.full((9, 2), 2.0, dtype=DT))
    (s,) = lt.score(lambda p: Poisson(p[0]), [lam], x)
    torch.testing.assert_close(s, x / lam - 1)
    y = torch.rand(3, 3, 2, dtype=DT) * 4
    (s,) = lt.score(lambda p: Exponential(p[0]), [lam], y)
    assert s.shape == (3, 3, 2)
    torch.testing.assert_close(s, 1 / lam - y)


def test_shared_parameter_sums_over_batch_components() -> None:
    """A scalar loc broadcast over batch (3,): its score sums the components' scores."""
    loc, scale = t(0.2), t(0.5, 1.0, 2.0)
    x = torch.randn(4, 3, dtype=DT)
    s_loc, s_scale = lt.score(lambda p: Normal(p[0], p[1]), [loc, scale], x)
    assert s_loc.shape == (4,) and s_scale.shape == (4, 3)
    torch.testing.assert_close(s_loc, ((x - loc) / scale**2).sum(-1))


def test_single_sample_without_sample_shape() -> None:
    """x of shape batch_shape + event_shape alone gives scores of shape param.shape."""
    loc, scale = t(0.0, 1.0), t(1.0, 2.0)
    x = t(0.5, -1.0)
    s_loc, _ = lt.score(lambda p: Normal(p[0], p[1]), [loc, scale], x)
    assert s_loc.shape == (2,)
    torch.testing.assert_close(s_loc, (x - loc) / scale**2)


def test_score_matches_autograd_loop_for_multivariate_normal() -> None:
    """(c) vmap'ed scores equal a Python loop of torch.autograd.grad, event shape (3,)."""
    torch.manual_seed(4)
    loc = torch.randn(3, dtype=DT)
    tril = torch.tril(torch.randn(3, 3, dtype=DT), -1) + torch.diag(t(1.0, 0.5, 2.0))

    def dist_fn(p: list[Tensor]) -> Distribution:
        return MultivariateNormal(p[0], scale_tril=p[1])

    x = dist_fn([loc, tril]).sample((2, 5))
    s_loc, s_tril = lt.score(dist_fn, [loc, tril], x)
    assert s_loc.shape == (2, 5, 3) and s_tril.shape == (2, 5, 3, 3)
    ps = [loc.clone().requires_grad_(), tril.clone().requires_grad_()]
    for i in range(2):
        for j in range(5):
            g_loc, g_tril = torch.autograd.grad(dist_fn(ps).log_prob(x[i, j]), ps)
            torch.testing.assert_close(s_loc[i, j], g_loc)
            torch.testing.assert_close(s_tril[i, j], g_tril)


def test_score_leaves_params_untouched() -> None:
    """Params that require grad get no .grad and no graph from ``score``."""
    loc = t(0.5).requires_grad_()
    (s,) = lt.score(lambda p: Normal(p[0], 1.0), [loc], torch.randn(4, dtype=DT))
    assert loc.grad is None and not s.requires_grad


def test_flatten_scores_concatenates_in_order() -> None:
    """flatten_scores: (N, 2) and (N,) -> (N, 3), parameters in order."""
    a, b = torch.randn(5, 2), torch.randn(5)
    flat = flatten_scores([a, b])
    assert flat.shape == (5, 3)
    torch.testing.assert_close(flat, torch.cat([a, b[:, None]], 1))


# --- (b) E[s] = 0 and Cov[s] = F ------------------------------------------------------------------

Case = tuple[Callable[[list[Tensor]], Distribution], list[Tensor], Callable[[list[Tensor]], Tensor]]


def _normal_fisher(p: list[Tensor]) -> Tensor:
    return torch.diag(torch.stack([1 / p[1] ** 2, 2 / p[1] ** 2]))


def _categorical_fisher(p: list[Tensor]) -> Tensor:
    probs = torch.softmax(p[0], -1)
    return torch.diag(probs) - probs[:, None] * probs[None, :]


FAMILIES: dict[str, Case] = {
    "normal": (lambda p: Normal(p[0], p[1]), [t(0.3), t(1.5)], _normal_fisher),
    "bernoulli": (
        lambda p: Bernoulli(logits=p[0]),
        [t(0.4, -1.0)],
        lambda p: torch.diag(torch.sigmoid(p[0]) * torch.sigmoid(-p[0])),
    ),
    "categorical": (lambda p: Categorical(logits=p[0]), [t(0.2, -0.5, 0.8)], _categorical_fisher),
    "poisson": (lambda p: Poisson(p[0]), [t(0.7, 3.0)], lambda p: torch.diag(1 / p[0])),
    "exponential": (lambda p: Exponential(p[0]), [t(1.7)], lambda p: (1 / p[0] ** 2).reshape(1, 1)),
}


def _draw_scores(dist_fn: Callable[[list[Tensor]], Distribution], params: list[Tensor]) -> Tensor:
    x = dist_fn(params).sample((N_DRAWS,))
    return flatten_scores(lt.score(dist_fn, params, x))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_score_has_mean_zero(family: str, seed: int) -> None:
    """E_p[s] = 0 entry-wise, N = 20 000 draws, Bonferroni over the parameter entries."""
    dist_fn, params, _ = FAMILIES[family]
    s = _draw_scores(dist_fn, params)
    assert_mean(s, torch.zeros(s.shape[1], dtype=DT), ALPHA, what=f"E[score] for {family}")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fisher_matches_closed_form(family: str, seed: int) -> None:
    """lt.fisher equals the closed form within z·SE per entry (SE from the same draws).

    The SE of entry (i, j) is the standard deviation of s_i s_j over the draws divided by √N;
    Bonferroni over the P(P+1)/2 distinct entries. Also (c): lt.fisher equals the mean outer
    product of those same draws exactly.
    """
    dist_fn, params, closed_form = FAMILIES[family]
    fisher = lt.fisher(dist_fn, params, samples=N_DRAWS)
    torch.manual_seed(seed)  # the same draws again, for the standard errors
    s = _draw_scores(dist_fn, params)
    outer = s[:, :, None] * s[:, None, :]  # (N, P, P)
    torch.testing.assert_close(fisher, outer.mean(0))
    rows, cols = torch.triu_indices(s.shape[1], s.shape[1])
    assert_mean(outer[:, rows, cols], closed_form(params)[rows, cols], ALPHA, what=family)


def test_centered_fisher_is_the_sample_covariance() -> None:
    """(c) centered=True gives the unbiased sample covariance of the same scores."""
    dist_fn, params, _ = FAMILIES["categorical"]
    torch.manual_seed(5)
    fisher = lt.fisher(dist_fn, params, samples=500, centered=True)
    torch.manual_seed(5)
    x = dist_fn(params).sample((500,))
    s = flatten_scores(lt.score(dist_fn, params, x))
    torch.testing.assert_close(fisher, torch.cov(s.T))


def test_fisher_concatenates_parameters_in_order() -> None:
    """(c) Fisher over [loc (2,), scale (2,)] is (4, 4): loc's entries first, then scale's."""
    loc, scale = t(0.0, 1.0), t(1.0, 2.0)

    def dist_fn(p: list[Tensor]) -> Distribution:
        return Normal(p[0], p[1])

    torch.manual_seed(6)
    fisher = lt.fisher(dist_fn, [loc, scale], samples=10)
    torch.manual_seed(6)
    x = dist_fn([loc, scale]).sample((10,))
    s = torch.cat([(x - loc) / scale**2, ((x - loc) ** 2 - scale**2) / scale**3], 1)
    assert fisher.shape == (4, 4)
    torch.testing.assert_close(fisher, s.T @ s / 10)


def test_fisher_check_detects_a_wrong_closed_form() -> None:
    """Power: the same tolerance rejects Normal's Fisher with 1/σ² in place of 2/σ² for scale."""
    dist_fn, params, closed_form = FAMILIES["normal"]
    torch.manual_seed(0)
    s = _draw_scores(dist_fn, params)
    outer = s[:, :, None] * s[:, None, :]
    wrong = closed_form(params) * torch.tensor([[1.0, 1.0], [1.0, 0.5]], dtype=DT)
    rows, cols = torch.triu_indices(2, 2)
    assert float(z_scores(outer[:, rows, cols], wrong[rows, cols]).max()) > z_bonferroni(ALPHA, 3)
