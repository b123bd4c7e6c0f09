r"""REBAR and RELAX: unbiased estimators for discrete distributions with a relaxation-based
control variate.

With :math:`z \sim p(z;\theta)` the perturbed logits, :math:`b = H(z)` the discrete sample and
:math:`\tilde z \sim p(z \mid b)` a second draw of the logits *given* b (see
:mod:`logtrick.gumbel`), any differentiable :math:`c(z)` gives the unbiased estimator

.. math::  \hat g = \big[f(b) - c(\tilde z)\big]\nabla_\theta \log p(b)
           + \nabla_\theta c(z) - \nabla_\theta c(\tilde z),

because :math:`\mathbb{E}[c(\tilde z)\nabla\log p(b)] + \mathbb{E}[\nabla c(\tilde z)]
= \nabla\mathbb{E}[c(z)]`. REBAR takes :math:`c = \eta f(\sigma_\lambda(z))`, RELAX a learned
network; both tune :math:`c` to minimise the variance (:func:`variance_backward`).

Conventions as in :mod:`logtrick.gumbel`: ``Bernoulli`` f takes 0/1 tensors, categorical f
takes one-hot vectors ``(K,) + batch_shape + (n,)``, also for ``Categorical``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from logtrick.baselines import resolve_baseline, score_terms
from logtrick.checks import check_finite, check_in_range, check_positive, check_positive_int
from logtrick.costs import CostFn, evaluate_cost, joint_log_prob, require_gradient
from logtrick.dice import magic_box
from logtrick.gumbel import hard_sample, perturbed_logits, relax_sample
from logtrick.independent import discrete_base, open_uniform

__all__ = ["ControlVariateNet", "Rebar", "Relax", "conditional_logits", "variance_backward"]


def conditional_logits(dist: Distribution, hard: Tensor) -> Tensor:
    r"""Reparameterised :math:`\tilde z \sim p(z \mid b)`: the perturbed logits given the sample.

    Bernoulli (u restricted to the interval that yields b, :math:`p = \sigma(\theta)`):

    .. math::  \tilde z = \theta + \log\tilde u - \log(1-\tilde u),\quad
               \tilde u = \begin{cases} 1 - p\,(1 - v) & b = 1 \\ v\,(1-p) & b = 0\end{cases}

    Categorical (normalised log-probabilities :math:`\theta`, b the chosen index; the others are
    Gumbels truncated below :math:`\tilde z_b`), in log space so that a very negative
    :math:`\theta_i` cannot overflow :math:`e^{-\theta_i}`:

    .. math::  \tilde z_b = -\log(-\log v_b),\qquad
               \tilde z_i = -\operatorname{logaddexp}\big(\log(-\log v_i) - \theta_i,\,
               \log(-\log v_b)\big),\ i\neq b

    A masked category (:math:`\theta_i = -\infty`) gets :math:`\tilde z_i = -\infty` with zero
    gradient, as in :func:`~logtrick.gumbel.perturbed_logits`: it is never sampled.

    Args:
        dist: the Bernoulli or categorical distribution (optionally inside ``Independent``).
        hard: ``(K,) + batch_shape`` 0/1 values, or one-hot ``(K,) + batch_shape + (n,)``
            (the batch shape of the distribution inside ``Independent``).

    Returns:
        :math:`\tilde z`, shaped like :func:`perturbed_logits`, differentiable in the logits.

    References:
        Tucker et al. (2017), REBAR, section 3 and appendix C.
    """
    base, kind = discrete_base(dist, "conditional_logits")
    theta = base.logits
    v = open_uniform(tuple(hard.shape), theta)
    if kind == "bernoulli":
        p = torch.sigmoid(theta)
        z1 = theta + (-p * (1 - v)).log1p() - F.logsigmoid(theta) - (-v).log1p()
        z0 = theta + v.log() + F.logsigmoid(-theta) - (-v * (1 - p)).log1p()
        return torch.where(hard > 0, z1, z0)
    log_e = (-v.log()).log()  # log(-log v): minus a standard Gumbel
    log_eb = (log_e * hard).sum(-1, keepdim=True)
    return torch.where(hard > 0, -log_e, -torch.logaddexp(log_e - theta, log_eb))


def _as_value(base: Distribution, hard: Tensor) -> Tensor:
    """What ``log_prob`` takes: the index for ``Categorical``, the sample otherwise."""
    return hard.argmax(-1) if isinstance(base, Categorical) else hard


def _score_part(
    resid: Tensor, log_prob: Tensor, baseline: object, context: Tensor | None
) -> Tensor:
    r"""Value 0, gradient :math:`(r - b)\nabla\log p`; keeps r's dependence on the control
    variate's parameters, and b's (computed from r), for :func:`variance_backward`."""
    bl = resolve_baseline(baseline)
    if bl.max_order < 2:
        raise TypeError(
            f"baseline: {type(bl).__name__} estimates first derivatives only, but Rebar/Relax "
            f"differentiate the estimate again to train the control variate; use a scalar one"
        )
    out = resid * (magic_box(log_prob) - 1.0)
    part = score_terms(resid, log_prob, bl, 0, context, with_cost=False)
    return out if part is None else out + part


def _squeeze_like(c: Tensor, cost: Tensor) -> Tensor:
    """Drop a trailing dimension of size 1 that ``cost`` lacks (a network's ``(K, 1)`` output)."""
    return c.squeeze(-1) if c.shape == (*cost.shape, 1) else c


def _control_variate_terms(
    f: CostFn,
    dist: Distribution,
    samples: int,
    baseline: object,
    context: Tensor | None,
    control: Callable[[Tensor, int], Tensor],
    who: str,
) -> Tensor:
    r"""Terms of value f(b) and gradient :math:`(f(b) - c(\tilde z))\nabla\log p(b) + \nabla c(z)
    - \nabla c(\tilde z)` (the REBAR/RELAX estimator), with ``control(z, cost.dim())`` = c.

    ``dist`` may be an ``Independent``: z, b and z̃ then have the shapes of the distribution
    inside it, f and c map them to ``(K,) + dist.batch_shape[:j]``, and ``log p(b)`` is the
    ``Independent``'s (summed over the reinterpreted dimensions)."""
    base, kind = discrete_base(dist, who)
    z = perturbed_logits(base, samples)
    hard = hard_sample(z.detach(), kind)
    z_tilde = conditional_logits(base, hard)
    cost = evaluate_cost(f, hard, dist, samples)
    log_prob = joint_log_prob(dist, _as_value(base, hard), cost)
    c_z, c_tilde = (_squeeze_like(control(v, cost.dim()), cost) for v in (z, z_tilde))
    for label, c in (("c(z)", c_z), ("c(z_tilde)", c_tilde)):
        if c.shape != cost.shape:
            raise ValueError(
                f"control_variate: {who}'s {label} has shape {tuple(c.shape)}, expected the "
                f"cost's shape {tuple(cost.shape)} for z of shape {tuple(z.shape)}"
            )
        check_finite(f"control_variate {label}", c)
    resid = cost.detach() - c_tilde
    diff = c_z - c_tilde
    return cost + _score_part(resid, log_prob, baseline, context) + (diff - diff.detach())


def variance_backward(loss: Tensor, params: Sequence[Tensor], control: Iterable[Tensor]) -> Tensor:
    r"""Accumulate the estimate into ``params``' ``.grad``, :math:`\nabla_\phi \sum \hat g^2`
    into the control variate's ``.grad``, and the ordinary gradient of ``loss`` into every other
    tensor it depends on (a ``Learned`` baseline's network, a network inside f).

    .. math::  \nabla_\phi \operatorname{Var}[\hat g] = \nabla_\phi \mathbb{E}[\hat g^2]
               = \mathbb{E}[2\, \hat g\, \nabla_\phi \hat g]

    because :math:`\mathbb{E}[\hat g]` does not depend on :math:`\phi` (the estimator is
    unbiased for every :math:`\phi`). :math:`\hat g = \nabla_\theta` ``loss`` is taken with
    ``create_graph=True``, so f must be twice differentiable where the control variate uses it;
    a baseline computed from the residual (leave-one-out) keeps its dependence on :math:`\phi`
    in :math:`\hat g`.

    Args:
        loss: a scalar built from the estimator's terms (e.g. ``expectation(...).sum()``).
        params: the tensors :math:`\theta` whose gradient is estimated (e.g. logits, an
            encoder's parameters).
        control: the control variate's parameters :math:`\phi` (``estimator.parameters()``).

    Returns:
        The detached :math:`\sum \hat g^2` (a single-sample variance proxy, for logging).

    References:
        Grathwohl et al. (2018), Backpropagation through the Void, section 3.3.
    """
    params = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    sq = sum(g.pow(2).sum() for g in grads if g is not None)
    phi = [q for q in control if q.requires_grad]
    saved = [None if q.grad is None else q.grad.clone() for q in phi]
    loss.backward(retain_graph=True)  # params: the estimate; other tensors: their gradient
    for q, grad in zip(phi, saved):  # the control variate gets the variance gradient instead
        q.grad = grad
    if phi and isinstance(sq, Tensor) and sq.requires_grad:
        sq.backward(inputs=phi)
    return torch.as_tensor(sq).detach()


class Rebar(nn.Module):
    r"""REBAR: the score function with the Concrete relaxation of f as an unbiased control variate.

    .. math::  \hat g = \big[f(b) - \eta f(\sigma_\lambda(\tilde z))\big]\nabla_\theta\log p(b)
               + \eta \nabla_\theta f(\sigma_\lambda(z)) - \eta\nabla_\theta f(\sigma_\lambda(
               \tilde z)),\quad z \sim p(z;\theta),\ b = H(z),\ \tilde z \sim p(z\mid b)

    Unbiased for every :math:`\eta, \lambda`. Both are learnable (``nn.Parameter``: the scale
    ``eta`` and ``log_temperature``); train them to minimise the estimator's variance with
    :meth:`backward` (see :func:`variance_backward`). Costs one evaluation of f at b and two at
    relaxed samples per draw.

    Requires: ``Bernoulli``, ``Categorical`` or ``OneHotCategorical``, optionally inside
    ``Independent``; f differentiable on relaxed inputs (and twice differentiable for learning
    :math:`\eta, \lambda`). Categorical f takes one-hot vectors; masked categories (logit −inf)
    are never sampled and get gradient 0. A baseline, if given, is subtracted from the residual
    :math:`f(b) - c(\tilde z)`. Value: exactly the mean of f at the discrete samples.

    Args:
        temperature: initial :math:`\lambda > 0`.
        scale: initial :math:`\eta`.

    Example (train θ and the control variate together; see :class:`Relax`):
        >>> import logtrick as lt
        >>> from torch.distributions import Bernoulli
        >>> theta = torch.zeros(3, requires_grad=True)
        >>> est = Rebar(temperature=0.5)
        >>> loss = lt.expectation(lambda b: ((b - 0.45) ** 2).sum(-1), Bernoulli(logits=theta),
        ...                       samples=8, estimator=est)
        >>> _ = est.backward(loss, [theta])   # theta.grad and est.eta.grad are now set

    References:
        Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein (2017), REBAR: Low-variance, unbiased
        gradient estimates for discrete latent variable models.
    """

    name: ClassVar[str] = "rebar"
    unbiased: ClassVar[str] = "yes"
    requires: ClassVar[str] = "Bernoulli or categorical; f differentiable on relaxed inputs"
    max_order: ClassVar[float] = 1
    takes_baseline: ClassVar[bool] = True

    def __init__(self, temperature: float = 0.5, scale: float = 1.0) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_in_range("scale", scale, -math.inf, math.inf, low_open=True, high_open=True)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.eta = nn.Parameter(torch.tensor(float(scale)))

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        _, kind = discrete_base(dist, "Rebar")
        lam = self.log_temperature.exp()

        def control(z: Tensor, keep: int) -> Tensor:
            y = relax_sample(z, kind, lam)
            return self.eta * require_gradient(evaluate_cost(f, y, dist, samples), y, "Rebar")

        return _control_variate_terms(f, dist, samples, baseline, context, control, "Rebar")

    def backward(self, loss: Tensor, params: Sequence[Tensor]) -> Tensor:
        """Gradient into ``params`` and variance gradient into η, λ (:func:`variance_backward`)."""
        return variance_backward(loss, params, self.parameters())


class ControlVariateNet(nn.Module):
    r"""The default :math:`c_\phi` of :class:`Relax`: one tanh hidden layer on the logits of a
    joint sample, the output layer initialised to zero (so that an untrained RELAX is the plain
    score function, and training lowers the variance from there).

    .. math::  c_\phi(z) = w_2^\top \tanh(W_1 z + b_1) + b_2,\qquad w_2 = 0,\ b_2 = 0
               \ \text{initially}

    Args:
        num_inputs: the number of logits of one joint sample (the entries of z that f reduces).
        hidden: width of the hidden layer.
    """

    def __init__(self, num_inputs: int, hidden: int = 16) -> None:
        super().__init__()
        self.num_inputs = check_positive_int("num_inputs", num_inputs)
        self.hidden = nn.Linear(num_inputs, check_positive_int("hidden", hidden))
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor, keep: int) -> Tensor:
        """``z`` ``(K,) + lead + trail`` -> ``(K,) + lead``: the trailing dimensions from ``keep``
        on (those of one joint sample) are flattened into the network's input."""
        flat = z.flatten(keep) if z.dim() > keep else z.unsqueeze(-1)
        if flat.shape[-1] != self.num_inputs:
            raise ValueError(
                f"z: Relax's control-variate network takes {self.num_inputs} logits per joint "
                f"sample, got z of shape {tuple(z.shape)}: {flat.shape[-1]} beyond the cost's "
                f"{keep} dimensions; use one Relax per problem size"
            )
        return self.out(torch.tanh(self.hidden(flat))).squeeze(-1)


def _check_same_dtype(net: nn.Module, z: Tensor) -> None:
    """The control variate's parameters have the logits' dtype (else torch's matmul error)."""
    dtypes = {p.dtype for p in net.parameters() if p.is_floating_point()}
    if dtypes and dtypes != {z.dtype}:
        raise TypeError(
            f"control_variate: its parameters are {', '.join(sorted(map(str, dtypes)))} but the "
            f"logits are {z.dtype}; convert one of them, e.g. est.to({z.dtype})"
        )


class Relax(nn.Module):
    r"""RELAX: the score function with a learned, reparameterised control variate :math:`c_\phi`.

    .. math::  \hat g = \big[f(b) - c_\phi(\tilde z)\big]\nabla_\theta\log p(b)
               + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z),\quad
               z \sim p(z;\theta),\ b = H(z),\ \tilde z \sim p(z\mid b)

    Unbiased for every :math:`\phi`, and f may be a black box (only :math:`c_\phi` is
    differentiated). Train :math:`\phi` to minimise the variance with :meth:`backward`, which
    puts the estimate into the parameters' ``.grad`` and
    :math:`\nabla_\phi \mathbb{E}[\hat g^2]` into ``control_variate``'s. Costs one evaluation of
    f and two of :math:`c_\phi` per draw.

    Requires: ``Bernoulli``, ``Categorical`` or ``OneHotCategorical``, optionally inside
    ``Independent``. A baseline, if given, is subtracted from the residual
    :math:`f(b) - c_\phi(\tilde z)`. Value: exactly the mean of f at the discrete samples.
    Infinite logits (masked categories, −inf) are the same in every draw: they enter
    :math:`c_\phi` as 0, are never sampled and get gradient 0.

    **Default network.** ``Relax()`` (also ``estimator="relax"`` by name) uses
    :class:`ControlVariateNet`, built by the first call of :meth:`terms` for the number of
    logits of one joint sample (the dimensions of z that f reduces). Its output layer starts at
    zero, so the untrained estimator is the plain score function. Its parameters exist only from
    that first call: create the optimiser over ``est.parameters()`` after it, or pass
    ``num_inputs`` to build the network at once. :meth:`backward` trains it like any other.

    Args:
        control_variate: maps logits z of shape ``(K,) + batch_shape`` (categorical:
            ``+ (n,)``; the batch shape inside ``Independent``) to the cost's shape
            ``(K,) + batch_shape[:j]`` (a trailing dimension of size 1 is squeezed). To include
            REBAR's term, let it call f on ``torch.sigmoid(z / temperature)``. ``None``: the
            default network.
        num_inputs: build the default network now, for this many logits per joint sample.
        hidden: hidden width of the default network.

    Example (one optimiser for θ, one for φ; ``backward`` feeds both):
        >>> import logtrick as lt
        >>> from torch.distributions import Bernoulli
        >>> theta = torch.zeros(3, requires_grad=True)
        >>> f = lambda b: ((b - 0.45) ** 2).sum(-1)      # a black box
        >>> est = Relax(num_inputs=3)  # or Relax(nn.Sequential(nn.Linear(3, 16), nn.Tanh(), ...))
        >>> opt = torch.optim.Adam([theta], lr=0.05)
        >>> cv_opt = torch.optim.Adam(est.parameters(), lr=0.01)
        >>> for _ in range(3):
        ...     opt.zero_grad(); cv_opt.zero_grad()
        ...     loss = lt.expectation(f, Bernoulli(logits=theta), samples=8, estimator=est)
        ...     variance_proxy = est.backward(loss, [theta])
        ...     opt.step(); cv_opt.step()

    References:
        Grathwohl, Choi, Wu, Roeder & Duvenaud (2018), Backpropagation through the Void:
        Optimizing Control Variates for Black-Box Gradient Estimation.
    """

    name: ClassVar[str] = "relax"
    unbiased: ClassVar[str] = "yes"
    requires: ClassVar[str] = "Bernoulli or categorical; f may be a black box"
    max_order: ClassVar[float] = 1
    takes_baseline: ClassVar[bool] = True

    def __init__(
        self,
        control_variate: Callable[[Tensor], Tensor] | None = None,
        *,
        num_inputs: int | None = None,
        hidden: int = 16,
    ) -> None:
        super().__init__()
        if control_variate is not None and not callable(control_variate):
            raise TypeError(f"control_variate: expected a module, got {type(control_variate)}")
        self.hidden = check_positive_int("hidden", hidden)
        if control_variate is None and num_inputs is not None:
            control_variate = ControlVariateNet(num_inputs, hidden)
        self.control_variate = control_variate

    def _control(self, z: Tensor, keep: int) -> Tensor:
        """c_φ at z, with infinite logits (masked categories, the same in every draw) entered as
        0; builds the default network for the first z it sees."""
        z = z.masked_fill(z.isinf(), 0.0)
        if self.control_variate is None:
            net = ControlVariateNet(z.shape[keep:].numel(), self.hidden)
            self.control_variate = net.to(dtype=z.dtype, device=z.device)
        if isinstance(self.control_variate, nn.Module):
            _check_same_dtype(self.control_variate, z)
        if isinstance(self.control_variate, ControlVariateNet):
            return self.control_variate(z, keep)
        return self.control_variate(z)

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        return _control_variate_terms(f, dist, samples, baseline, context, self._control, "Relax")

    def backward(self, loss: Tensor, params: Sequence[Tensor]) -> Tensor:
        """Gradient into ``params`` and variance gradient into φ (:func:`variance_backward`)."""
        return variance_backward(loss, params, self.parameters())
