"""logtrick: the log-derivative trick in PyTorch.

Unbiased, low-variance gradients of expectations whose integrand may be a black box, and a small,
fast policy-gradient trainer built on the same estimator (:mod:`logtrick.rl`).
"""

from logtrick.advantages import (
    GroupedAdvantages,
    MovingAverageState,
    baseline_advantages,
    group_mean_advantages,
    group_normalized_advantages,
    grouped_advantages,
    moving_average_advantages,
    rank_advantages,
    rloo_advantages,
)
from logtrick.baselines import (
    Constant,
    Learned,
    LeaveOneOut,
    MovingAverage,
    NoBaseline,
    OptimalScale,
)
from logtrick.estimators import Auto, Pathwise, ScoreFunction, expectation
from logtrick.score import fisher, score
from logtrick.sequence import sequence_surrogate
from logtrick.surrogate import magic_box, surrogate

__version__ = "0.1.0"

__all__ = [
    "Auto",
    "Constant",
    "GroupedAdvantages",
    "Learned",
    "LeaveOneOut",
    "MovingAverage",
    "MovingAverageState",
    "NoBaseline",
    "OptimalScale",
    "Pathwise",
    "ScoreFunction",
    "__version__",
    "baseline_advantages",
    "expectation",
    "fisher",
    "group_mean_advantages",
    "group_normalized_advantages",
    "grouped_advantages",
    "magic_box",
    "moving_average_advantages",
    "rank_advantages",
    "rloo_advantages",
    "score",
    "sequence_surrogate",
    "surrogate",
]
