r"""Built-in problems with known answers: the Gaussian test functions and the Bernoulli toy.

Each :class:`Problem` bundles a cost ``f``, a ``dist_fn(params) -> Distribution``, the parameter
tensors (leaves that require grad) and the exact expectation as a differentiable function of the
parameters, so the exact gradient is one ``autograd.grad`` away. They feed
:func:`logtrick.diagnostics.compare`, ``logtrick compare`` and the benchmarks.

Gaussian test functions (Mohamed et al. 2020, section 3), :math:`x \sim \mathcal N(\mu, \sigma^2)`:

.. math::  \mathbb{E}[(x-k)^2] = (\mu-k)^2 + \sigma^2,\qquad
           \mathbb{E}[\cos kx] = \cos(k\mu)\, e^{-k^2\sigma^2/2},\qquad
           \mathbb{E}[e^{-kx^2}] = \frac{\exp(-k\mu^2 / (1 + 2k\sigma^2))}{\sqrt{1 + 2k\sigma^2}}
           \ (1 + 2k\sigma^2 > 0).

Bernoulli toy (Tucker et al. 2017, REBAR; Grathwohl et al. 2018, RELAX),
:math:`b \sim \mathrm{Bernoulli}(\sigma(\theta))`:

.. math::  \mathbb{E}[(b-t)^2] = p(1-t)^2 + (1-p)t^2,\qquad
           \frac{d}{d\theta}\mathbb{E} = (1-2t)\, p(1-p),\quad p = \sigma(\theta),

so for :math:`t < 1/2` the minimum is at :math:`\theta \to -\infty`.

References:
    Mohamed, Rosca, Figurnov, Mnih (2020). Monte Carlo Gradient Estimation in Machine Learning.
    JMLR 21(132). Tucker et al. (2017), REBAR. Grathwohl et al. (2018), RELAX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Normal

from logtrick.costs import CostFn
from logtrick.scores import DistFn

__all__ = [
    "GAUSSIAN_FUNCTIONS",
    "PROBLEMS",
    "Problem",
    "bernoulli_problem",
    "gaussian_function",
    "gaussian_problem",
]

ExactFn = Callable[[Sequence[Tensor]], Tensor]

GAUSSIAN_FUNCTIONS: dict[str, str] = {"square": "(x-k)^2", "exp": "exp(-k x^2)", "cos": "cos(k x)"}
"""Short name -> formula of the Gaussian test functions."""


@dataclass(frozen=True, eq=False)
class Problem:
    """A cost, a distribution family, its parameters and the exact expectation."""

    name: str
    """Label used in tables and plots, e.g. ``"gaussian (x-k)^2, k=0"``."""
    f: CostFn
    """Maps samples ``(K,) + batch_shape + event_shape`` to costs ``(K,) + batch_shape``."""
    dist_fn: DistFn
    """Maps the list of parameters to the sampling distribution."""
    params: tuple[Tensor, ...]
    """Leaf tensors that require grad (their gradient is estimated)."""
    param_names: tuple[str, ...]
    """One name per parameter tensor, e.g. ``("mu", "sigma")``."""
    exact: ExactFn | None = None
    """The exact expectation as a differentiable function of the parameters (or ``None``)."""
    differentiable: bool = False
    """Whether f is differentiable in x (the pathwise estimator applies)."""

    def dist(self) -> Distribution:
        """The distribution at the current parameters (connected to ``params``)."""
        return self.dist_fn(list(self.params))

    def exact_value(self) -> float | None:
        """The exact expectation at the current parameters, or ``None`` if unknown."""
        if self.exact is None:
            return None
        with torch.no_grad():
            return float(self.exact([p.detach() for p in self.params]))

    def exact_gradient(self) -> Tensor | None:
        """The exact gradient, flattened and concatenated over ``params``: shape ``(P,)``."""
        if self.exact is None:
            return None
        leaves = [p.detach().clone().requires_grad_(True) for p in self.params]
        with torch.enable_grad():
            grads = torch.autograd.grad(self.exact(leaves), leaves)
        return torch.cat([g.reshape(-1) for g in grads])


def gaussian_function(name: str, k: float) -> CostFn:
    r"""The Gaussian test function ``name`` in ``GAUSSIAN_FUNCTIONS`` with parameter ``k``.

    Args:
        name: ``"square"`` for :math:`(x-k)^2`, ``"exp"`` for :math:`e^{-kx^2}`, ``"cos"`` for
            :math:`\cos kx`.
        k: the function's parameter.

    Returns:
        An elementwise function: samples of any shape to costs of the same shape.
    """
    if name == "square":
        return lambda x: (x - k) ** 2
    if name == "exp":
        return lambda x: torch.exp(-k * x**2)
    if name == "cos":
        return lambda x: torch.cos(k * x)
    raise ValueError(f"function: unknown name {name!r}; expected one of {list(GAUSSIAN_FUNCTIONS)}")


def _gaussian_exact(name: str, k: float) -> ExactFn:
    def exact(params: Sequence[Tensor]) -> Tensor:
        mu, sigma = params
        if name == "square":
            return (mu - k) ** 2 + sigma**2
        if name == "cos":
            return torch.cos(k * mu) * torch.exp(-0.5 * k**2 * sigma**2)
        a = 1.0 + 2.0 * k * sigma**2
        return torch.exp(-k * mu**2 / a) / a.sqrt()

    return exact


def gaussian_problem(
    function: str = "square", k: float = 0.0, mu: float = 1.0, sigma: float = 1.0
) -> Problem:
    r"""Gaussian test problem :math:`\mathbb{E}_{\mathcal N(x;\mu,\sigma^2)}[f(x;k)]`.

    .. math::  f \in \{(x-k)^2,\ e^{-kx^2},\ \cos kx\},\qquad \theta = (\mu, \sigma)

    Args:
        function: ``"square"``, ``"exp"`` or ``"cos"`` (see :data:`GAUSSIAN_FUNCTIONS`).
        k: the test function's parameter. For ``"exp"``, :math:`1 + 2k\sigma^2 > 0` is required
            (otherwise :math:`\mathbb{E}[f]` is infinite).
        mu: the mean :math:`\mu`.
        sigma: the standard deviation :math:`\sigma > 0`.

    Returns:
        A :class:`Problem` with scalar parameters ``(mu, sigma)`` and the closed-form expectation.

    References:
        Mohamed et al. (2020), JMLR 21(132), section 3 (Figure 2).
    """
    f = gaussian_function(function, k)
    if sigma <= 0:
        raise ValueError(f"sigma: expected a positive standard deviation, got {sigma!r}")
    if function == "exp" and 1.0 + 2.0 * k * sigma**2 <= 0:
        raise ValueError(
            f"k: E[exp(-k x^2)] is infinite for k={k} and sigma={sigma} (needs 1 + 2 k sigma^2 > 0)"
        )
    params = (
        torch.tensor(float(mu), requires_grad=True),
        torch.tensor(float(sigma), requires_grad=True),
    )
    return Problem(
        name=f"gaussian {GAUSSIAN_FUNCTIONS[function]}, k={k:g}",
        f=f,
        dist_fn=lambda p: Normal(p[0], p[1]),
        params=params,
        param_names=("mu", "sigma"),
        exact=_gaussian_exact(function, k),
        differentiable=True,
    )


def bernoulli_problem(target: float = 0.499, theta: float = 0.0) -> Problem:
    r"""The REBAR/RELAX toy :math:`\mathbb{E}_{b\sim\mathrm{Bernoulli}(\sigma(\theta))}[(b-t)^2]`.

    .. math::  \mathbb{E}[(b-t)^2] = \sum_{b\in\{0,1\}} p(b;\theta)\,(b-t)^2

    The exact expectation is this sum over the support (enumeration), differentiable in
    :math:`\theta`. f is not differentiable in b (b is discrete): no pathwise estimator.

    Args:
        target: t; the gradient :math:`(1-2t)p(1-p)` is tiny next to the estimator noise when
            t is close to 1/2.
        theta: the initial logit :math:`\theta` (a scalar).

    Returns:
        A :class:`Problem` with the scalar parameter ``theta``.

    References:
        Tucker et al. (2017), REBAR, section 6.1; Grathwohl et al. (2018), RELAX, section 6.1.
    """

    def f(b: Tensor) -> Tensor:
        return (b - target) ** 2

    def exact(params: Sequence[Tensor]) -> Tensor:
        dist = Bernoulli(logits=params[0])
        support = torch.tensor([0.0, 1.0], dtype=params[0].dtype)
        return (dist.log_prob(support).exp() * f(support)).sum()

    return Problem(
        name=f"bernoulli (b-t)^2, t={target:g}",
        f=f,
        dist_fn=lambda p: Bernoulli(logits=p[0]),
        params=(torch.tensor(float(theta), requires_grad=True),),
        param_names=("theta",),
        exact=exact,
        differentiable=False,
    )


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "gaussian": gaussian_problem,
    "bernoulli": bernoulli_problem,
}
"""Short name -> problem factory (used by ``logtrick compare --problem``)."""
