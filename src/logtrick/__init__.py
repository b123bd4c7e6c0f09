"""logtrick: the log-derivative trick in PyTorch.

Unbiased, low-variance gradients of expectations whose integrand may be a black box, and a small,
fast policy-gradient trainer built on the same estimator (:mod:`logtrick.rl`).
"""

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
from logtrick.surrogate import magic_box, surrogate

__version__ = "0.1.0"

__all__ = [
    "Auto",
    "Constant",
    "Learned",
    "LeaveOneOut",
    "MovingAverage",
    "NoBaseline",
    "OptimalScale",
    "Pathwise",
    "ScoreFunction",
    "__version__",
    "expectation",
    "fisher",
    "magic_box",
    "score",
    "surrogate",
]
