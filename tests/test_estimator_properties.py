r"""What each estimator promises, and that it keeps to it (issue 11, defects 8 and 9).

The metadata (``unbiased``, ``requires``, ``max_order``) of every estimator in ``ESTIMATORS``,
rendered as one table; first-order-only estimators and baselines refuse a second derivative with
an error naming them, while the score function's and the pathwise estimator's second derivatives
are DiCE's / exact; ``"auto"`` says when it leaves a baseline unused; a short baseline name builds
a fresh object.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor
from torch.distributions import Bernoulli, Normal

import logtrick as lt
from logtrick.estimators import estimator_table
from logtrick.pathwise import PATHWISE_CONDITION

DT = torch.float64


def test_every_estimator_states_what_it_assumes() -> None:
    """One row per estimator; no claim of unbiasedness that depends on f."""
    table = estimator_table()
    for name, cls in lt.ESTIMATORS.items():
        assert isinstance(cls.unbiased, str) and cls.unbiased, name
        assert isinstance(cls.requires, str) and cls.requires, name
        assert cls.max_order == math.inf or cls.max_order >= 1, name
        assert f"| `{name}` | `{cls.__name__}` |" in table
    assert table.count("\n") == len(lt.ESTIMATORS) + 1
    assert lt.Pathwise.unbiased == PATHWISE_CONDITION and "continuous" in PATHWISE_CONDITION
    assert "continuous" in lt.Auto.unbiased
    first_only = {"arm", "disarm", "measure_valued", "delta_method", "rebar", "relax"}
    assert {n for n, c in lt.ESTIMATORS.items() if c.max_order == 1} >= first_only
    assert lt.ScoreFunction.max_order == math.inf


def _normal(r: int = 3) -> tuple[Tensor, Tensor, Normal]:
    mu = torch.full((r,), 0.3, dtype=DT, requires_grad=True)
    sigma = torch.full((r,), 1.2, dtype=DT, requires_grad=True)
    return mu, sigma, Normal(mu, sigma)


def _second_derivative(value: Tensor, param: Tensor) -> Tensor:
    (g,) = torch.autograd.grad(value.sum(), param, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), param)
    return h


@pytest.mark.parametrize(
    ("estimator", "dist", "who"),
    [
        (lt.ARM(), "bernoulli", "ARM"),
        (lt.DisARM(), "bernoulli", "DisARM"),
        (lt.MeasureValued(), "normal", "MeasureValued"),
        (lt.DeltaMethod(), "normal", "DeltaMethod"),
        ("score_function", "optimal_scale", "OptimalScale"),
    ],
    ids=["arm", "disarm", "measure_valued", "delta_method", "optimal_scale"],
)
def test_first_order_estimators_refuse_a_second_derivative(
    estimator: object, dist: str, who: str
) -> None:
    """A second derivative through them raises, naming them (defect 9); the first is fine."""
    theta = torch.full((3,), 0.2, dtype=DT, requires_grad=True)
    baseline = None
    if dist == "bernoulli":
        d = Bernoulli(logits=theta)
    else:
        d = Normal(theta, 1.0)
        if dist == "optimal_scale":
            baseline = lt.OptimalScale([theta])
    value = lt.expectation(lambda x: x**2 + x, d, 4, estimator, baseline)
    (g,) = torch.autograd.grad(value.sum(), theta, create_graph=True)
    assert g.isfinite().all()
    with pytest.raises(RuntimeError, match=f"{who} estimates first derivatives only"):
        torch.autograd.grad(g.sum(), theta)


@pytest.mark.parametrize("estimator", ["score_function", "pathwise"])
def test_second_derivatives_of_the_any_order_estimators_are_unbiased(estimator: str) -> None:
    """(b) Normal, f = x³: d²E/dμ² = 6μ, through lt.expectation. Failure rate 1e-3."""
    torch.manual_seed(21)
    mu, _, dist = _normal(4000)
    h = _second_derivative(lt.expectation(lambda x: x**3, dist, 4, estimator), mu)
    n = h.shape[0]
    mean, se = h.mean(), h.std() / n**0.5
    assert abs(float(mean) - 6 * 0.3) <= 3.29 * float(se), (float(mean), float(se))


def test_auto_warns_when_the_baseline_goes_unused() -> None:
    """auto with a differentiable f picks pathwise: a baseline is unused, and it says so."""
    _, _, dist = _normal()
    with pytest.warns(UserWarning, match="picked the pathwise estimator.*baseline is unused"):
        lt.expectation(lambda x: x**2, dist, 4, "auto", "leave_one_out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no baseline, or the score function: no warning
        lt.expectation(lambda x: x**2, dist, 4, "auto")
        lt.expectation(lambda x: (x > 0).to(DT), dist, 4, "auto", "leave_one_out")


def test_a_short_name_builds_a_fresh_moving_average() -> None:
    """baseline="moving_average" builds a new, empty average on every call: b = 0, so the
    gradient is the plain estimator's bit for bit (keep a lt.MovingAverage() for history)."""
    grads = []
    for baseline in (None, "moving_average", "moving_average"):
        mu, _, dist = _normal()
        torch.manual_seed(3)
        lt.expectation(lambda x: x**2 + 5.0, dist, 4, "score_function", baseline).sum().backward()
        grads.append(mu.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
    kept, warm = lt.MovingAverage(), []
    for _ in range(2):  # an object keeps its history: the second call differs
        mu, _, dist = _normal()
        torch.manual_seed(3)
        lt.expectation(lambda x: x**2 + 5.0, dist, 4, "score_function", kept).sum().backward()
        warm.append(mu.grad)
    assert torch.equal(warm[0], grads[0]) and not torch.equal(warm[1], grads[0])
