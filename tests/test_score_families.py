r"""``lt.score`` and ``lt.fisher`` on every torch.distributions family.

Tiers: (c) for every family, the per-sample scores equal ``torch.autograd.grad`` of
``log_prob`` on a few samples, one backward pass per sample (the brute-force reference); (b) for
every *regular* family (support independent of the parameters) the score has mean zero: N draws,
:math:`|\bar s| \le z\,\hat\sigma/\sqrt N` per parameter entry, z from ``ALPHA`` per family with
Bonferroni over its entries, so the parametrized test fails by chance with probability at most
``len(REGULAR) * ALPHA`` ≈ 4e-3 (fixed seeds: in practice never); (a) hand formulas where the
support moves with a parameter (``Uniform``, ``Pareto``'s scale), and the Fisher information of
the two families whose ``log_prob`` ``vmap`` refuses (``Geometric``, ``Multinomial``) against
closed forms. Parameters that do not enter ``log_prob`` differentiably, samples outside the
support and non-finite scores give a ``ValueError``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.distributions as D
from torch import Tensor
from torch.distributions import transforms as T

import logtrick as lt
import logtrick.scores as score_module
from logtrick.scores import flatten_scores
from stats import assert_mean

DT = torch.float64
ALPHA = 1e-4
N_DRAWS = 2000


def t(*values: float, dtype: torch.dtype = DT) -> Tensor:
    return torch.tensor(values if len(values) != 1 else values[0], dtype=dtype)


TRIL = torch.tensor([[1.0, 0.0], [0.3, 0.5]], dtype=DT)


def tril(v: Tensor) -> Tensor:
    """The 2x2 lower-triangular matrix with entries v = (l00, l10, l11). Wishart's log_prob reads
    the upper entry of ``scale_tril`` that its sampler ignores, so a full-matrix parameter's upper
    entry would have a score of mean != 0 (torch 2.x); parameterise the lower triangle only."""
    return torch.zeros(2, 2, dtype=v.dtype).index_put((TRIL_ROWS, TRIL_COLS), v)


TRIL_ROWS, TRIL_COLS = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
DistFn = Callable[[list[Tensor]], D.Distribution]

# name -> (dist_fn, params, regular: the support does not depend on the parameters)
FAMILIES: dict[str, tuple[DistFn, list[Tensor], bool]] = {
    "Bernoulli": (lambda p: D.Bernoulli(logits=p[0]), [t(0.3, -1.0)], True),
    "Beta": (lambda p: D.Beta(p[0], p[1]), [t(2.0, 0.7), t(1.5, 3.0)], True),
    "Binomial": (lambda p: D.Binomial(5, logits=p[0]), [t(0.3, -1.0)], True),
    "Categorical": (lambda p: D.Categorical(logits=p[0]), [t(0.3, -1.0, 0.5)], True),
    "Cauchy": (lambda p: D.Cauchy(p[0], p[1]), [t(0.3), t(1.5)], True),
    "Chi2": (lambda p: D.Chi2(p[0]), [t(3.0)], True),
    "ContinuousBernoulli": (lambda p: D.ContinuousBernoulli(logits=p[0]), [t(0.3, -1.0)], True),
    "Dirichlet": (lambda p: D.Dirichlet(p[0]), [t(2.0, 0.7, 1.5)], True),
    "Exponential": (lambda p: D.Exponential(p[0]), [t(1.7)], True),
    "FisherSnedecor": (lambda p: D.FisherSnedecor(p[0], p[1]), [t(5.0), t(7.0)], True),
    "Gamma": (lambda p: D.Gamma(p[0], p[1]), [t(2.0), t(1.5)], True),
    # float32: torch's GeneralizedPareto.log_prob compares with a float32 constant
    "GeneralizedPareto": (
        lambda p: D.GeneralizedPareto(torch.tensor(0.0), p[0], p[1]),
        [t(1.5, dtype=torch.float32), t(0.2, dtype=torch.float32)],
        True,
    ),
    "Geometric": (lambda p: D.Geometric(logits=p[0]), [t(0.3, -1.0)], True),
    "Gumbel": (lambda p: D.Gumbel(p[0], p[1]), [t(0.3), t(1.5)], True),
    "HalfCauchy": (lambda p: D.HalfCauchy(p[0]), [t(1.5)], True),
    "HalfNormal": (lambda p: D.HalfNormal(p[0]), [t(1.5)], True),
    "Independent": (lambda p: D.Independent(D.Normal(p[0], p[1]), 1), [t(0.3, -1.0), t(2.0)], True),
    "InverseGamma": (lambda p: D.InverseGamma(p[0], p[1]), [t(3.0), t(1.5)], True),
    "Kumaraswamy": (lambda p: D.Kumaraswamy(p[0], p[1]), [t(2.0), t(1.5)], True),
    # dim 2: at dim >= 3 torch's LKJCholesky sampler and log_prob disagree (the concentration's
    # score has mean -0.23 +- 0.006 at dim 3, concentration 1.5, torch 2.x)
    "LKJCholesky": (lambda p: D.LKJCholesky(2, p[0]), [t(1.5)], True),
    "Laplace": (lambda p: D.Laplace(p[0], p[1]), [t(0.3), t(1.5)], True),
    "LogNormal": (lambda p: D.LogNormal(p[0], p[1]), [t(0.3), t(0.5)], True),
    "LogisticNormal": (lambda p: D.LogisticNormal(p[0], p[1]), [t(0.3, -0.2), t(0.5, 1.0)], True),
    "LowRankMultivariateNormal": (
        lambda p: D.LowRankMultivariateNormal(p[0], p[1], p[2]),
        [t(0.3, -0.2), torch.tensor([[0.5], [0.2]], dtype=DT), t(1.0, 0.5)],
        True,
    ),
    "MixtureSameFamily": (
        lambda p: D.MixtureSameFamily(D.Categorical(logits=p[0]), D.Normal(p[1], 1.0)),
        [t(0.3, -0.2), t(-1.0, 1.0)],
        True,
    ),
    "Multinomial": (lambda p: D.Multinomial(4, logits=p[0]), [t(0.3, -1.0, 0.5)], True),
    "MultivariateNormal": (
        lambda p: D.MultivariateNormal(p[0], scale_tril=p[1]),
        [t(0.3, -0.2), TRIL.clone()],
        True,
    ),
    "NegativeBinomial": (lambda p: D.NegativeBinomial(p[0], logits=p[1]), [t(3.0), t(-0.5)], True),
    "Normal": (lambda p: D.Normal(p[0], p[1]), [t(0.3), t(1.5)], True),
    "OneHotCategorical": (lambda p: D.OneHotCategorical(logits=p[0]), [t(0.3, -1.0, 0.5)], True),
    "OneHotCategoricalStraightThrough": (
        lambda p: D.OneHotCategoricalStraightThrough(logits=p[0]),
        [t(0.3, -1.0, 0.5)],
        True,
    ),
    "Pareto": (lambda p: D.Pareto(p[0], p[1]), [t(1.5), t(3.0)], False),  # support [scale, inf)
    "Poisson": (lambda p: D.Poisson(p[0]), [t(2.5)], True),
    "RelaxedBernoulli": (
        lambda p: D.RelaxedBernoulli(p[0], logits=p[1]),
        [t(0.7), t(0.3, -1.0)],
        True,
    ),
    "RelaxedOneHotCategorical": (
        lambda p: D.RelaxedOneHotCategorical(p[0], logits=p[1]),
        [t(0.7), t(0.3, -1.0, 0.5)],
        True,
    ),
    "StudentT": (lambda p: D.StudentT(p[0], p[1], p[2]), [t(5.0), t(0.3), t(1.5)], True),
    "TransformedDistribution": (
        lambda p: D.TransformedDistribution(
            D.Normal(p[0], 1.0), [T.AffineTransform(0.0, p[1]), T.ExpTransform()]
        ),
        [t(0.3), t(2.0)],
        True,
    ),
    "Uniform": (lambda p: D.Uniform(p[0], p[1]), [t(0.3), t(1.5)], False),  # support [low, high)
    "VonMises": (lambda p: D.VonMises(p[0], p[1]), [t(0.3), t(1.5)], True),
    "Weibull": (lambda p: D.Weibull(p[0], p[1]), [t(1.5), t(2.0)], True),
    "Wishart": (lambda p: D.Wishart(p[0], scale_tril=tril(p[1])), [t(8.0), t(1.0, 0.3, 0.5)], True),
}
REGULAR = sorted(name for name, (_, _, regular) in FAMILIES.items() if regular)


def _draw(dist_fn: DistFn, params: list[Tensor], n: int) -> Tensor:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Wishart warns about near-singular draws it corrects
        return dist_fn(params).sample((n,))


def test_every_torch_distribution_family_is_covered() -> None:
    """A family added to torch.distributions must be added here (abstract bases excluded)."""
    families = {
        name
        for name in D.__all__
        if isinstance(getattr(D, name), type) and issubclass(getattr(D, name), D.Distribution)
    }
    assert families - {"Distribution", "ExponentialFamily"} <= set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_score_equals_autograd_of_log_prob(family: str) -> None:
    """(c) Per-sample scores on sample shape (2, 3) equal one ``torch.autograd.grad`` per sample."""
    dist_fn, params, _ = FAMILIES[family]
    torch.manual_seed(0)
    x = _draw(dist_fn, params, 6).reshape(2, 3, *_draw(dist_fn, params, 1).shape[1:])
    scores = lt.score(dist_fn, params, x)
    ps = [p.clone().requires_grad_(True) for p in params]
    for i in range(2):
        for j in range(3):
            expected = torch.autograd.grad(dist_fn(ps).log_prob(x[i, j]).sum(), ps)
            for s, e in zip(scores, expected):
                torch.testing.assert_close(s[i, j], e)


@pytest.mark.parametrize("family", REGULAR)
def test_score_has_mean_zero(family: str) -> None:
    """(b) E_p[s] = 0 entry-wise, N = 2000 draws, ALPHA per family (Bonferroni over entries)."""
    dist_fn, params, _ = FAMILIES[family]
    torch.manual_seed(1)
    s = flatten_scores(lt.score(dist_fn, params, _draw(dist_fn, params, N_DRAWS))).double()
    assert_mean(s, torch.zeros(s.shape[1], dtype=DT), ALPHA, what=f"E[score] of {family}")


def test_scores_where_the_support_moves_with_the_parameter() -> None:
    """(a) Uniform: d/dlow = 1/(high - low), d/dhigh = -1/(high - low); Pareto(scale s, alpha):
    d/ds = alpha/s, d/dalpha = 1/alpha + log s - log x. Not mean zero: the support moves."""
    low, high = t(0.3), t(1.5)
    x = t(0.4, 1.0, 1.4)
    s_low, s_high = lt.score(lambda p: D.Uniform(p[0], p[1]), [low, high], x)
    torch.testing.assert_close(s_low, torch.full((3,), 1 / 1.2, dtype=DT))
    torch.testing.assert_close(s_high, torch.full((3,), -1 / 1.2, dtype=DT))
    scale, alpha = t(1.5), t(3.0)
    y = t(1.6, 2.0, 7.0)
    s_scale, s_alpha = lt.score(lambda p: D.Pareto(p[0], p[1]), [scale, alpha], y)
    torch.testing.assert_close(s_scale, torch.full((3,), 2.0, dtype=DT))
    torch.testing.assert_close(s_alpha, 1 / 3 + math.log(1.5) - y.log())


@pytest.mark.parametrize("family", ["Geometric", "Multinomial"])
def test_fisher_of_families_vmap_refuses_matches_closed_form(family: str) -> None:
    """Geometric(logits): F = 1 - p (s = (1 - p) - k p); Multinomial(n, logits): F = n (diag p -
    p pᵀ). Bonferroni over the P(P+1)/2 distinct entries, ALPHA = 1e-3 per family."""
    dist_fn, params, _ = FAMILIES[family]
    if family == "Geometric":
        closed = torch.diag(1 - torch.sigmoid(params[0]))
    else:
        p = torch.softmax(params[0], -1)
        closed = 4 * (torch.diag(p) - p[:, None] * p[None, :])
    torch.manual_seed(2)
    fisher = lt.fisher(dist_fn, params, samples=N_DRAWS)
    torch.manual_seed(2)
    s = flatten_scores(lt.score(dist_fn, params, _draw(dist_fn, params, N_DRAWS)))
    outer = s[:, :, None] * s[:, None, :]
    torch.testing.assert_close(fisher, outer.mean(0))
    rows, cols = torch.triu_indices(s.shape[1], s.shape[1])
    assert_mean(outer[:, rows, cols], closed[rows, cols], 1e-3, what=f"Fisher of {family}")


class _BranchOnData(D.Normal):
    """A Normal whose log_prob branches on the data in Python: ``vmap`` cannot run it."""

    def log_prob(self, value: Tensor) -> Tensor:
        if bool((value > self.loc).all()):
            return super().log_prob(value)
        return super().log_prob(value) + 0.0


# how dist_fn uses params: as batch parameters (per-sample copies work), through indexing (copies
# change the batch shape), mixing the leading dimension (copies pass the value check only)
BRANCHY = {
    "copies": lambda p: _BranchOnData(p[0], p[1]),
    "loop_indexing": lambda p: _BranchOnData(p[0][:2], p[0][2:]),
    "loop_mixing": lambda p: _BranchOnData(p[0] if p[0].dim() == 1 else p[0].flip(0), p[1]),
}


@pytest.mark.parametrize("how", sorted(BRANCHY))
def test_log_prob_that_vmap_refuses_gives_the_same_scores(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-sample copies of the parameters where dist_fn allows them, else the loop over the
    samples (its calls are counted: 2 samples for the copies' own check, or all 5)."""
    calls = []
    looped = score_module._looped_grads

    def counting(dist_fn: DistFn, params: list[Tensor], flat: Tensor) -> list[Tensor]:
        calls.append(flat.shape[0])
        return looped(dist_fn, params, flat)

    monkeypatch.setattr(score_module, "_looped_grads", counting)
    loc, scale = t(0.2, -0.3), t(1.0, 2.0)
    params = [torch.cat([loc, scale])] if how == "loop_indexing" else [loc, scale]
    x = torch.randn(5, 2, dtype=DT)
    scores = flatten_scores(lt.score(BRANCHY[how], params, x))
    expected = torch.cat([(x - loc) / scale**2, ((x - loc) ** 2 - scale**2) / scale**3], 1)
    torch.testing.assert_close(scores, expected)
    assert calls == ([2] if how == "copies" else [2, 5] if how == "loop_mixing" else [5])


class _Igamma(D.Exponential):
    """log_prob through ``torch.igamma``, whose derivative in its first argument torch lacks."""

    def log_prob(self, value: Tensor) -> Tensor:
        return super().log_prob(value) + torch.igamma(self.rate, torch.ones_like(value))


def test_parameters_without_a_derivative_are_refused() -> None:
    loc, scale = t(0.2), t(1.5)
    x = torch.randn(4, dtype=DT)
    with pytest.raises(ValueError, match=r"params\[0\] \(shape \(\)\): Normal.log_prob does not"):
        lt.score(lambda p: D.Normal(p[0].detach(), p[1]), [loc, scale], x)
    with pytest.raises(ValueError, match=r"params\[1\].*does not depend on it differentiably"):
        lt.fisher(lambda p: D.Normal(p[0], 1.0 + (p[1] > 0).to(DT)), [loc, scale], samples=10)
    with pytest.raises(ValueError, match=r"_Igamma.log_prob cannot be differentiated in params"):
        lt.score(lambda p: _Igamma(p[0]), [scale], x.abs())


def test_samples_outside_the_support_and_non_finite_scores_are_refused() -> None:
    theta = t(0.3, -1.0)
    with pytest.raises(ValueError, match=r"x: 1 of 4 values lie outside the support"):
        lt.score(lambda p: D.Bernoulli(logits=p[0]), [theta], t([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"score of params\[0\]: 1 of 3 entries are NaN or inf"):
        lt.score(lambda p: D.Beta(p[0], p[1]), [t(0.7), t(2.0)], t(0.0, 0.5, 0.2))


def test_centered_fisher_needs_two_samples() -> None:
    """samples=1 with centered=True divided by N - 1 = 0: NaN before, a clear error now."""
    dist_fn, params, _ = FAMILIES["Normal"]
    with pytest.raises(ValueError, match="centered=True needs at least 2 draws"):
        lt.fisher(dist_fn, params, samples=1, centered=True)
    assert lt.fisher(dist_fn, params, samples=1).isfinite().all()
    assert lt.fisher(dist_fn, params, samples=2, centered=True).isfinite().all()
