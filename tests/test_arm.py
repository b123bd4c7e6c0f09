"""ARM and DisARM: hand formula for one pair, unbiasedness against enumeration, variance order."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal

from logtrick.arm import ARM, DisARM
from logtrick.enumeration import enumerate_expectation
from logtrick.estimators import expectation

DT = torch.float64
THETA = torch.tensor([-1.0, 0.3, 1.5], dtype=DT)
TARGET = torch.tensor([0.2, 0.7, 0.45], dtype=DT)


def z_crit(failure_rate: float, checks: int) -> float:
    """Two-sided normal quantile at ``failure_rate`` split over ``checks`` (Bonferroni)."""
    return float(torch.special.ndtri(torch.tensor(1.0 - failure_rate / (2 * checks), dtype=DT)))


def quadratic(b: torch.Tensor) -> torch.Tensor:
    return ((b - TARGET) ** 2).sum(-1) + 2.0 * b[..., 0] * b[..., 1]


def random_net() -> nn.Module:
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)


def replicate_grads(est: object, f, theta0: torch.Tensor, reps: int, k: int) -> torch.Tensor:
    """``(reps,) + theta0.shape``: independent draws of the K-pair estimate of the gradient."""
    theta = theta0.expand(reps, *theta0.shape).clone().requires_grad_(True)
    est.terms(f, Bernoulli(logits=theta), k, None, None).mean(0).sum().backward()
    return theta.grad


def exact_grad(f, theta0: torch.Tensor) -> torch.Tensor:
    theta = theta0.clone().requires_grad_(True)
    enumerate_expectation(f, Bernoulli(logits=theta)).backward()
    return theta.grad


@pytest.mark.parametrize("est", [ARM(), DisARM()], ids=["arm", "disarm"])
def test_one_pair_matches_hand_formula(est: object) -> None:
    k = 4
    torch.manual_seed(7)
    u = torch.rand(k, 3, dtype=DT)  # the estimator draws the same uniforms after reseeding
    torch.manual_seed(7)
    theta = THETA.clone().requires_grad_(True)
    terms = est.terms(quadratic, Bernoulli(logits=theta), k, None, None)
    terms.sum().backward()
    p = torch.sigmoid(THETA)
    b, b_anti = (u < p).to(DT), (1 - u < p).to(DT)
    fb, fa = quadratic(b), quadratic(b_anti)
    if isinstance(est, ARM):
        expected = ((fa - fb)[:, None] * (u - 0.5)).sum(0)
    else:
        weight = (-1.0) ** b_anti * (b != b_anti) * torch.sigmoid(THETA.abs())
        expected = (0.5 * (fb - fa)[:, None] * weight).sum(0)
    torch.testing.assert_close(terms.detach(), 0.5 * (fb + fa))  # value: f at the discrete pair
    torch.testing.assert_close(theta.grad, expected)


# 2 estimators x 2 functions x 3 components = 12 checks at a total failure rate of 1e-3
@pytest.mark.parametrize("est", [ARM(), DisARM()], ids=["arm", "disarm"])
@pytest.mark.parametrize("which", ["quadratic", "network"])
def test_unbiased_against_enumeration(est: object, which: str) -> None:
    if which == "quadratic":
        f = quadratic
    else:
        net = random_net()
        f = lambda b: net(b).squeeze(-1).detach()  # noqa: E731  (a black box)
    truth = exact_grad(f, THETA)
    torch.manual_seed(0)
    grads = replicate_grads(est, f, THETA, reps=20000, k=1)
    se = grads.std(0) / grads.shape[0] ** 0.5
    assert ((grads.mean(0) - truth).abs() <= z_crit(1e-3, 12) * se).all(), (grads.mean(0), truth)


def test_disarm_variance_below_arm() -> None:
    """On E[sum (b - 0.499)^2] DisARM is ARM Rao-Blackwellised given the pair: lower variance."""
    f = lambda b: ((b - 0.499) ** 2).sum(-1)  # noqa: E731
    theta0 = torch.linspace(-2.0, 2.0, 5, dtype=DT)
    torch.manual_seed(1)
    g_arm = replicate_grads(ARM(), f, theta0, reps=50000, k=1)
    torch.manual_seed(1)  # the same uniforms: a paired comparison
    g_dis = replicate_grads(DisARM(), f, theta0, reps=50000, k=1)
    ratio = g_dis.var(0) / g_arm.var(0)
    print(f"DisARM / ARM variance per logit {theta0.tolist()}: {ratio.tolist()}")
    # paired difference of squared deviations: its mean is Var(ARM) - Var(DisARM) > 0
    d = (g_arm - g_arm.mean(0)) ** 2 - (g_dis - g_dis.mean(0)) ** 2
    se = d.std(0) / d.shape[0] ** 0.5
    assert (d.mean(0) > z_crit(1e-3, 5) * se).all(), ratio  # one-sided, 5 checks, total 1e-3
    assert (ratio < 1.0).all()


def test_reduced_and_leading_batch_shapes() -> None:
    theta = torch.zeros(2, 3, dtype=DT, requires_grad=True)
    terms = DisARM().terms(lambda b: b.sum(-1), Bernoulli(logits=theta), 5, None, None)
    assert terms.shape == (5, 2)
    terms.mean(0).sum().backward()
    assert theta.grad.shape == (2, 3)
    elementwise = ARM().terms(lambda b: b, Bernoulli(logits=theta), 5, None, None)
    assert elementwise.shape == (5, 2, 3)


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_through_expectation_equals_the_mean_of_the_terms(name: str) -> None:
    """``expectation(..., estimator=name)`` and ``estimator=object`` give exactly the value and
    gradient of ``object.terms(...).mean(0)`` on the same uniforms."""
    results = []
    for how in ("terms", "object", "name"):
        theta = THETA.clone().requires_grad_(True)
        torch.manual_seed(9)
        est, dist = (ARM() if name == "arm" else DisARM()), Bernoulli(logits=theta)
        if how == "terms":
            value = est.terms(quadratic, dist, 4, None, None).mean(0)
        else:
            value = expectation(quadratic, dist, 4, estimator=est if how == "object" else name)
        (grad,) = torch.autograd.grad(value, theta)
        results.append((value.detach(), grad))
    assert results[0][1].abs().sum() > 0
    for value, grad in results[1:]:
        torch.testing.assert_close(value, results[0][0])
        torch.testing.assert_close(grad, results[0][1])


def test_rejects_non_bernoulli() -> None:
    with pytest.raises(TypeError, match="ARM needs a Bernoulli"):
        ARM().terms(lambda x: x, Normal(0.0, 1.0), 2, None, None)
    with pytest.raises(TypeError, match="DisARM needs a Bernoulli"):
        DisARM().terms(lambda x: x, Normal(0.0, 1.0), 2, None, None)
