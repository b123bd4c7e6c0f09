"""The estimator chooser's facts, measured: which estimators apply to a problem, and at what cost.

``logtrick compare`` and the docs' estimator table run the same functions, so the "f evaluations"
and "relative cost" they show come from a run on the installed code, never from prose.
"""

from __future__ import annotations

from dataclasses import dataclass

from logtrick.diagnostics import compare, relative_costs
from logtrick.estimators import ESTIMATORS
from logtrick.problems import Problem, bernoulli_problem, gaussian_problem

__all__ = ["EstimatorCost", "applicable_estimators", "estimator_costs"]

_NOT_RUN = {"score_function", "auto"}  # auto is one of the others; sf runs with each baseline


def _applies(estimator: object, problem: Problem) -> bool:
    """Whether ``estimator`` runs on ``problem`` (one 2-sample estimate: the estimators refuse a
    distribution or an f they do not support with a TypeError or ValueError)."""
    try:
        estimator.terms(problem.f, problem.dist(), 2, None, None)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False
    return True


def applicable_estimators(
    problem: Problem, baselines: bool = True
) -> dict[str, tuple[object, object]]:
    """Every estimator that applies to ``problem``: label -> ``(estimator, baseline)``.

    The score function first (plain, and with ``baselines``: with each baseline, the per-parameter
    optimal scale and the exact mean as an oracle constant), then every other entry of
    :data:`logtrick.ESTIMATORS` (but ``auto``) that runs on the problem's distribution and f, by
    its short name. Biased ones (the relaxations) are included: their max|z| shows the bias.
    """
    import logtrick as lt

    sf = lt.ScoreFunction()
    table: dict[str, tuple[object, object]] = {"score_function": (sf, None)}
    if baselines:
        table["sf + moving_average"] = (sf, lt.MovingAverage())
        table["sf + leave_one_out"] = (sf, lt.LeaveOneOut())
        table["sf + optimal_scale"] = (sf, lt.OptimalScale(problem.params))
        mean = problem.exact_value()
        if mean is not None:
            table["sf + exact E[f] (oracle)"] = (sf, lt.Constant(mean))
    for name, cls in sorted(ESTIMATORS.items()):
        if name in _NOT_RUN:
            continue
        estimator = cls()
        if _applies(estimator, problem):
            table[name] = (estimator, None)
    return table


@dataclass(frozen=True)
class EstimatorCost:
    """What one estimator costs, measured on a reference problem."""

    problem: str
    """The problem it was measured on."""
    f_evals_per_sample: float
    """Evaluations of f per drawn sample (``samples`` = K)."""
    relative_cost: float
    """Time per estimate against the plain score function on the same problem and run."""


def estimator_costs(samples: int = 4, repeats: int = 50, seed: int = 0) -> dict[str, EstimatorCost]:
    """Every entry of :data:`logtrick.ESTIMATORS` (but ``auto``) measured on the first of two
    reference problems it applies to: a Bernoulli bit with cost :math:`(b - 0.45)^2` and a
    Gaussian with cost :math:`x^2`. Fills the docs' "f evaluations" and "relative cost"."""
    problems = [
        bernoulli_problem(target=0.45, theta=0.5),
        gaussian_problem("square", k=0.0, mu=1.0, sigma=1.0),
    ]
    out: dict[str, EstimatorCost] = {}
    for problem in problems:
        estimators = applicable_estimators(problem, baselines=False)
        rows = compare(problem, estimators, samples=samples, repeats=repeats, seed=seed)
        for row, rel in zip(rows, relative_costs(rows)):
            if row.name not in out:
                per_sample = row.stats.f_evals / samples
                out[row.name] = EstimatorCost(problem.name, per_sample, rel)
    return out
