"""Bad input fails at the boundary with a ValueError/TypeError that names the argument."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Categorical,
    Independent,
    Normal,
    Pareto,
    Poisson,
    TransformedDistribution,
    Uniform,
)

import logtrick as lt


def _normal(n: int = 3) -> Normal:
    return Normal(torch.zeros(n, requires_grad=True), 1.0)


@pytest.mark.parametrize(
    "f",
    [lambda x: x.sum(), lambda x: x[0], lambda x: x.unsqueeze(-1), lambda x: x.T],
    ids=["scalar", "no_sample_dim", "extra_dim", "transposed"],
)
@pytest.mark.parametrize("estimator", ["score_function", "pathwise", "auto"])
def test_f_of_wrong_shape(f: object, estimator: str) -> None:
    with pytest.raises(ValueError, match=r"f: expected f\(x\) of shape \(samples,\)"):
        lt.expectation(f, _normal(), samples=4, estimator=estimator)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("estimator", ["score_function", "pathwise", "auto"])
def test_f_not_finite(bad: float, estimator: str) -> None:
    def f(x: Tensor) -> Tensor:
        return torch.where(x == x[0, 0], torch.full_like(x, bad), x)

    with pytest.raises(ValueError, match=r"f\(x\): 1 of 12 entries are NaN or inf"):
        lt.expectation(f, _normal(), samples=4, estimator=estimator)


def test_leave_one_out_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="LeaveOneOut: needs at least 2 samples"):
        lt.expectation(lambda x: x, _normal(), samples=1, baseline="leave_one_out")
    with pytest.raises(ValueError, match="LeaveOneOut: needs at least 2 samples"):
        lt.surrogate(torch.ones(1, 3), torch.zeros(1, 3), lt.LeaveOneOut())


def test_pathwise_without_rsample_suggests_score_function() -> None:
    dist = Bernoulli(logits=torch.zeros(3, requires_grad=True))
    with pytest.raises(ValueError, match=r"Bernoulli has no rsample.*estimator='score_function'"):
        lt.expectation(lambda x: x, dist, samples=4, estimator="pathwise")
    with pytest.raises(ValueError, match="has no rsample"):
        lt.expectation(lambda x: x, dist, samples=4, estimator=lt.Pathwise())


@pytest.mark.parametrize("samples", [0, -3, 2.5, 4.0, True, "4", None])
def test_samples_must_be_a_positive_int(samples: object) -> None:
    with pytest.raises(ValueError, match="samples: expected a positive int"):
        lt.expectation(lambda x: x, _normal(), samples=samples)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="samples: expected a positive int"):
        lt.fisher(lambda p: Normal(p[0], 1.0), [torch.zeros(2)], samples=samples)  # type: ignore[arg-type]


def test_learned_baseline_of_wrong_shape() -> None:
    learned = lt.Learned(nn.Linear(2, 5))  # 5 outputs per context, costs (4, 3)
    with pytest.raises(
        ValueError, match=r"Learned's module output\): shape \(3, 5\) does not broadcast to"
    ):
        lt.expectation(lambda x: x, _normal(), 4, "score_function", learned, torch.randn(3, 2))
    with pytest.raises(ValueError, match="context: a Learned baseline needs the context"):
        lt.expectation(lambda x: x, _normal(), 4, "score_function", learned)


def test_distribution_without_gradient_warns_unless_no_grad() -> None:
    dist = Normal(torch.zeros(3), 1.0)
    with pytest.warns(UserWarning, match="dist: no parameter of this Normal requires grad"):
        lt.expectation(lambda x: x, dist, samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            lt.expectation(lambda x: x, dist, samples=2)
        lt.expectation(lambda x: x, _normal(), samples=2)  # parameters with grad: no warning
        loc = torch.zeros(3, requires_grad=True)  # a parameter inside a transform counts too
        shifted = TransformedDistribution(Normal(torch.zeros(3), 1.0), [AffineTransform(loc, 2.0)])
        lt.expectation(lambda x: x, shifted, samples=2)
    fixed = TransformedDistribution(Normal(torch.zeros(3), 1.0), [AffineTransform(1.0, 2.0)])
    with pytest.warns(UserWarning, match="no parameter of this TransformedDistribution"):
        lt.expectation(lambda x: x, fixed, samples=2)


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="estimator: unknown name 'reinforce'"):
        lt.expectation(lambda x: x, _normal(), 2, estimator="reinforce")
    for estimator in ("score_function", "pathwise", "auto"):  # even where b would be unused
        with pytest.raises(ValueError, match="baseline: unknown name 'average'"):
            lt.expectation(lambda x: x, _normal(), 2, estimator, baseline="average")
    with pytest.raises(ValueError, match="baseline: unknown name"):
        lt.surrogate(torch.ones(2), torch.zeros(2), "loo")


def test_wrong_types() -> None:
    with pytest.raises(TypeError, match="estimator: pass an instance"):
        lt.expectation(lambda x: x, _normal(), 2, estimator=lt.ScoreFunction)
    with pytest.raises(TypeError, match="estimator: expected a name or an object"):
        lt.expectation(lambda x: x, _normal(), 2, estimator=3)
    with pytest.raises(TypeError, match="baseline: expected None, a number"):
        lt.expectation(lambda x: x, _normal(), 2, "score_function", baseline=True)
    with pytest.raises(TypeError, match=r"dist: expected a torch\.distributions\.Distribution"):
        lt.expectation(lambda x: x, torch.zeros(3), 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cost, log_prob: expected tensors"):
        lt.surrogate([1.0], torch.zeros(1))  # type: ignore[arg-type]


def test_surrogate_shapes_and_finiteness() -> None:
    with pytest.raises(ValueError, match=r"cost and log_prob: expected the same shape.*\(4, 3\)"):
        lt.surrogate(torch.ones(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="sample_dim: 2 is out of range"):
        lt.surrogate(torch.ones(4, 3), torch.zeros(4, 3), sample_dim=2)
    cost = torch.ones(4, 3)
    cost[2, 1] = float("nan")
    with pytest.raises(
        ValueError, match=r"cost: 1 of 12 entries are NaN or inf \(first at index \(2, 1\)"
    ):
        lt.surrogate(cost, torch.zeros(4, 3))


@pytest.mark.parametrize("bad", [float("nan"), -float("inf")])
def test_surrogate_refuses_a_log_prob_that_is_not_finite(bad: float) -> None:
    """A NaN log-probability (or −inf: a sample the distribution cannot produce) gave a NaN
    estimate and NaN gradients without a word; it is an error naming ``log_prob``."""
    log_prob = torch.zeros(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"log_prob: 1 of 12 entries are NaN or inf"):
        lt.surrogate(
            torch.ones(4, 3), log_prob + torch.where(torch.arange(12) == 7, bad, 0.0).view(4, 3)
        )


def test_baseline_constructors() -> None:
    with pytest.raises(ValueError, match="decay: expected a float in"):
        lt.MovingAverage(decay=1.0)
    with pytest.raises(ValueError, match="params: OptimalScale needs at least one tensor"):
        lt.OptimalScale([torch.zeros(2)])
    with pytest.raises(TypeError, match="OptimalScale is per-parameter"):
        lt.OptimalScale([torch.zeros(2, requires_grad=True)])(torch.ones(2))


def test_score_arguments() -> None:
    theta = torch.zeros(3)
    with pytest.raises(TypeError, match="params: expected a list of tensors, got a single Tensor"):
        lt.score(lambda p: Categorical(logits=p[0]), theta, torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"params\[0\]: expected a floating-point tensor"):
        lt.score(lambda p: Categorical(logits=p[0]), [torch.zeros(3, dtype=torch.long)], theta)
    with pytest.raises(ValueError, match=r"x: expected shape sample_shape \+ \(3,\)"):
        lt.score(lambda p: Normal(p[0], 1.0), [theta], torch.zeros(5, 2))
    with pytest.raises(TypeError, match=r"dist_fn\(params\): expected a torch.distributions"):
        lt.score(lambda p: p[0], [theta], torch.zeros(5, 3))


def test_every_dist_fn_taker_checks_what_it_returns() -> None:
    """``fisher`` and the diagnostics sampled from ``dist_fn(params)`` before checking it, so a
    tensor returned by mistake ended in ``AttributeError: 'Tensor' object has no attribute
    'sample'``; one check (``score.call_dist_fn``) now names it everywhere."""
    theta = torch.zeros(3, requires_grad=True)
    match = r"dist_fn\(params\): expected a torch.distributions.Distribution, got Tensor"
    with pytest.raises(TypeError, match=match):
        lt.fisher(lambda p: p[0], [theta], samples=4)
    with pytest.raises(TypeError, match=match):
        lt.diagnostics.gradient_variance(lambda x: x, lambda p: p[0], [theta], 4, repeats=4)
    with pytest.raises(TypeError, match=match):
        lt.diagnostics.check_pathwise(lambda x: x, lambda p: p[0], [theta], samples=4)
    with pytest.raises(TypeError, match=r"dist: expected a torch\.distributions\.Distribution"):
        lt.diagnostics.per_sample_gradients(lambda x: x, theta, [theta], 4)  # type: ignore[arg-type]


# --- issue 11 ----------------------------------------------------------------------------------


def test_a_baseline_that_would_enlarge_the_estimate_is_refused() -> None:
    """A (1, 1) baseline against costs (K,) would broadcast the estimate to (K, K) and multiply
    the gradient by K: a ValueError names both shapes (issue 11, defect 5)."""
    cost, log_prob = torch.ones(4), torch.zeros(4, requires_grad=True)
    with pytest.raises(
        ValueError,
        match=r"shape \(1, 1\) does not broadcast to the cost's shape "
        r"\(4,\)",
    ):
        lt.surrogate(cost, log_prob, torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) does not broadcast.*\(4, 3\)"):
        lt.expectation(lambda x: x, _normal(), 4, "score_function", torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"baselines\[0\] \(FromFunction's b\): shape \(1, 4\)"):
        lt.dice_surrogate([cost], [log_prob], [[0]], [lambda c, d, x: c[None]])
    for good in (torch.zeros(()), torch.zeros(1), torch.zeros(4)):  # these fit: no error
        assert lt.surrogate(cost, log_prob, good).shape == (4,)


def test_a_non_finite_baseline_is_refused() -> None:
    cost, log_prob = torch.ones(4), torch.zeros(4, requires_grad=True)
    with pytest.raises(ValueError, match=r"baseline \(Constant's b\): 1 of 4 entries are NaN"):
        lt.surrogate(cost, log_prob, torch.tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(ValueError, match="baseline: expected a finite number, got inf"):
        lt.surrogate(cost, log_prob, float("inf"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Normal(torch.tensor([0, 1]), 1.0),
        lambda: Bernoulli(logits=torch.tensor([0, 1])),
        lambda: Poisson(torch.tensor([1, 2])),
    ],
    ids=["normal", "bernoulli", "poisson"],
)
def test_integer_parameters_are_named(make: object) -> None:
    """Integer parameters: a TypeError that names them, not torch's NotImplementedError and a
    warning about requires_grad (issue 11, defect 13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=r"dist: \w+ has integer parameters .*torch\.int64"):
            lt.expectation(lambda x: x.float(), make(), 3, "score_function")  # type: ignore[operator]


def test_pathwise_with_a_detached_f_is_named() -> None:
    """f(x) detached from x: the pathwise estimator says so (issue 11, defect 13)."""
    with pytest.raises(ValueError, match=r"f: the pathwise estimator differentiates f\(x\)"):
        lt.expectation(lambda x: x.detach() ** 2, _normal(), 3, "pathwise")
    with torch.no_grad():  # no gradient wanted: the value is fine
        lt.expectation(lambda x: x.detach() ** 2, _normal(), 3, "pathwise")


@pytest.mark.parametrize("baseline", [1.0, "leave_one_out", "moving_average", lt.MovingAverage()])
def test_pathwise_refuses_a_baseline(baseline: object) -> None:
    """The pathwise estimator has no score term: a baseline would be ignored (defect 9)."""
    with pytest.raises(ValueError, match="baseline: the pathwise estimator has no score term"):
        lt.expectation(lambda x: x**2, _normal(), 4, "pathwise", baseline)
    lt.expectation(lambda x: x**2, _normal(), 4, "pathwise", None)  # no baseline: fine


def _supported(name: str) -> tuple[Tensor, object, object]:
    """A parameter, a distribution of it and an f that the estimator ``name`` accepts."""
    theta = torch.zeros(3, requires_grad=True)
    if name in ("measure_valued", "delta_method", "pathwise", "score_function", "auto"):
        return theta, Normal(theta, 1.0), lambda x: (x - 0.3) ** 2
    return theta, Bernoulli(logits=theta), lambda x: (x - 0.3) ** 2


@pytest.mark.parametrize("name", sorted(lt.ESTIMATORS))
@pytest.mark.parametrize("baseline", [0.5, "leave_one_out", "moving_average"])
def test_an_estimator_without_a_score_term_refuses_a_baseline(name: str, baseline: object) -> None:
    """Every estimator either uses a baseline or refuses it: none ignores it silently (ARM,
    DisARM, the relaxations, measure-valued and the delta method used to, like pathwise in
    defect 9). The same check guards the diagnostics, which run the estimators directly."""
    est = lt.ESTIMATORS[name]()
    theta, dist, f = _supported(name)
    if est.takes_baseline:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # auto: "the baseline is unused" when pathwise picked
            lt.expectation(f, dist, 4, name, baseline).sum().backward()
        return
    pattern = f"baseline: the {name} estimator has no score term"
    with pytest.raises(ValueError, match=pattern):
        lt.expectation(f, dist, 4, name, baseline)
    with pytest.raises(ValueError, match=pattern):
        lt.diagnostics.per_sample_gradients(f, dist, [theta], 4, name, baseline)
    lt.expectation(f, dist, 4, name, None).sum().backward()  # no baseline: fine


def test_a_used_baseline_changes_the_gradient() -> None:
    """Where a baseline is taken, it changes the gradient at the same samples (score function
    and REBAR, fixed seed): ``takes_baseline`` is true only where the baseline does something."""
    for name in ("score_function", "rebar"):
        grads = []
        for baseline in (None, 0.5):
            theta = torch.zeros(3, requires_grad=True)
            torch.manual_seed(1)
            lt.expectation(
                lambda x: (x - 0.3) ** 3, Bernoulli(logits=theta), 4, name, baseline
            ).sum().backward()
            grads.append(theta.grad)
        assert not torch.allclose(grads[0], grads[1]), name


@pytest.mark.parametrize("estimator", ["score_function", "auto"])
@pytest.mark.parametrize(
    "make",
    [
        lambda t: Uniform(t, t + 2.0),
        lambda t: Uniform(torch.zeros(3), t.exp() + 1.0),
        lambda t: Independent(Uniform(t, t + 2.0), 1),
        lambda t: Pareto(t.exp(), torch.full((3,), 3.0)),
    ],
    ids=["uniform", "uniform_high", "independent_uniform", "pareto"],
)
def test_the_score_function_refuses_a_support_that_moves_with_theta(
    make: object, estimator: str
) -> None:
    """For Uniform(θ, θ + 2) the log-density is −log 2 on the support, so the score-function
    gradient of E[x²] was exactly 0 on every sample against the true 2θ + 2: silently biased.
    The score-function path (also when ``auto`` falls back to it) refuses such a distribution."""
    theta = torch.zeros(3, requires_grad=True)
    dist = make(theta)  # type: ignore[operator]
    reduce = isinstance(dist, Independent)  # its batch shape is (), f sums the 3 coordinates

    def f(x: Tensor) -> Tensor:  # a black box: auto falls back to the score function
        return (x.detach() ** 2).sum(-1) if reduce else x.detach() ** 2

    with pytest.raises(ValueError, match=r"dist: the support of \w+ depends on its parameters"):
        lt.expectation(f, dist, 4, estimator)


def test_a_fixed_support_and_the_pathwise_estimator_still_work_for_uniform() -> None:
    theta = torch.zeros(3, requires_grad=True)
    with pytest.warns(UserWarning, match="no parameter of this Uniform requires grad"):
        lt.expectation(
            lambda x: x**2, Uniform(torch.zeros(3), torch.full((3,), 2.0)), 4, "score_function"
        )  # (constant bounds: accepted)
    torch.manual_seed(0)
    est = lt.expectation(lambda x: x**2, Uniform(theta, theta + 2.0), 20_000, "pathwise")
    est.sum().backward()  # d/dθ E[x²] = 2θ + 2 = 2 at θ = 0
    torch.testing.assert_close(theta.grad, torch.full((3,), 2.0), atol=0.05, rtol=0)
