r"""``variance_backward`` (``Rebar.backward`` / ``Relax.backward``) with a baseline.

(a) Deterministic: the control variate's gradient equals the finite-difference derivative of
:math:`S(\phi) = \sum_r \lVert\hat g_r\rVert^2` taken with common random numbers (the same seed for
:math:`\phi \pm h v`), so the sign and the value of :math:`\nabla_\phi \mathbb{E}[\hat g^2]` are
checked, also when the baseline is computed from the residual (leave-one-out: it depends on
:math:`\phi`); and a ``Learned`` baseline gets its ordinary gradient (issue 11, defect 2).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli

import logtrick as lt
from logtrick.rebar import Rebar, Relax, variance_backward

DT = torch.float64
THETA = torch.tensor([-0.4, 0.3, 1.1], dtype=DT)
R, K = 64, 3


def f(b: Tensor) -> Tensor:
    """A black box for Relax, differentiable on relaxed inputs for Rebar."""
    return ((b - torch.tensor([0.2, 0.7, 0.45], dtype=DT)) ** 2).sum(-1) + b[..., 0] * b[..., 1]


def _estimator(which: str) -> nn.Module:
    torch.manual_seed(4)
    if which == "rebar":
        return Rebar(temperature=0.6, scale=0.8).to(DT)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)
    return Relax(net)


def _loss(est: nn.Module, baseline: object, seed: int) -> tuple[Tensor, Tensor]:
    """The summed estimate over R replicas of θ (and θ), drawn from ``seed``."""
    theta = THETA.expand(R, 3).clone().requires_grad_()
    torch.manual_seed(seed)
    value = lt.expectation(f, Bernoulli(logits=theta), K, est, baseline, torch.ones(R, 2, dtype=DT))
    return value.sum(), theta


def _sum_of_squares(est: nn.Module, baseline: object, seed: int) -> float:
    loss, theta = _loss(est, baseline, seed)
    (g,) = torch.autograd.grad(loss, theta)
    return float(g.pow(2).sum())


@pytest.mark.parametrize("which", ["rebar", "relax"])
@pytest.mark.parametrize("baseline", ["none", "leave_one_out", "constant"])
def test_control_variate_gradient_is_the_derivative_of_the_squared_estimate(
    which: str, baseline: str
) -> None:
    """∇φ Σ ĝ² from variance_backward equals (S(φ + hv) − S(φ − hv)) / 2h, same draws."""
    est = _estimator(which)
    spec = {"none": None, "leave_one_out": "leave_one_out", "constant": 0.5}[baseline]
    loss, theta = _loss(est, spec, seed=5)
    phi = list(est.parameters())
    variance_backward(loss, [theta], phi)
    torch.manual_seed(6)
    direction = [torch.randn_like(p) for p in phi]
    analytic = sum(float((p.grad * v).sum()) for p, v in zip(phi, direction))
    h, values = 1e-5, []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, v in zip(phi, direction):
                p.add_(sign * h * v)
        values.append(_sum_of_squares(est, spec, seed=5))
        with torch.no_grad():
            for p, v in zip(phi, direction):
                p.sub_(sign * h * v)
    numeric = (values[0] - values[1]) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7), (analytic, numeric)


@pytest.mark.parametrize("which", ["rebar", "relax"])
def test_variance_backward_trains_a_learned_baseline(which: str) -> None:
    """The Learned baseline's network gets ∇ of its folded regression loss; θ gets ĝ."""
    est = _estimator(which)
    learned = lt.Learned(nn.Linear(2, 1).to(DT))
    loss, theta = _loss(est, learned, seed=7)
    expected = torch.autograd.grad(loss, list(learned.parameters()), retain_graph=True)
    (g,) = torch.autograd.grad(loss, theta, retain_graph=True)
    variance_backward(loss, [theta], list(est.parameters()))
    for p, e in zip(learned.parameters(), expected):
        assert p.grad is not None and bool(e.abs().sum() > 0)
        torch.testing.assert_close(p.grad, e)
    torch.testing.assert_close(theta.grad, g)
