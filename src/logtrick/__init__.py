"""logtrick: the log-derivative trick in PyTorch.

Unbiased, low-variance gradients of expectations whose integrand may be a black box, and a small,
fast policy-gradient trainer built on the same estimator (:mod:`logtrick.rl`).
"""

from logtrick import diagnostics, problems
from logtrick.arm import ARM, DisARM
from logtrick.baselines import (
    Constant,
    Learned,
    LeaveOneOut,
    MovingAverage,
    NoBaseline,
    OptimalScale,
)
from logtrick.dice import magic_box
from logtrick.enumeration import enumerate_expectation
from logtrick.estimators import ESTIMATORS, ScoreFunction, estimator_table, expectation
from logtrick.gumbel import GumbelSoftmax, StraightThrough
from logtrick.language.advantages import (
    GroupedAdvantages,
    MovingAverageState,
    baseline_advantages,
    batch_normalized_advantages,
    group_mean_advantages,
    group_normalized_advantages,
    grouped_advantages,
    moving_average_advantages,
    rank_advantages,
    reinforce_advantages,
    rloo_advantages,
)
from logtrick.language.sequence import sequence_surrogate, token_kl
from logtrick.language.tokens import (
    Completions,
    logits_of,
    sample_completions,
    sequence_log_probs,
    token_log_probs,
)
from logtrick.measure_valued import DeltaMethod, MeasureValued
from logtrick.pathwise import Auto, Pathwise
from logtrick.rebar import Rebar, Relax, variance_backward
from logtrick.scores import fisher, score
from logtrick.stochastic_graph import chain_dependencies, dice_surrogate
from logtrick.surrogates import surrogate
from logtrick.vimco import vimco_signals, vimco_surrogate

# The estimators of other modules, by short name (they import estimators.py, so they register
# here rather than there).
ESTIMATORS.update(
    {
        cls.name: cls
        for cls in (
            Pathwise,
            Auto,
            GumbelSoftmax,
            StraightThrough,
            Rebar,
            Relax,
            ARM,
            DisARM,
            MeasureValued,
            DeltaMethod,
        )
    }
)

__version__ = "0.1.0"

__all__ = [
    "ARM",
    "Auto",
    "Completions",
    "Constant",
    "DeltaMethod",
    "DisARM",
    "GroupedAdvantages",
    "GumbelSoftmax",
    "Learned",
    "LeaveOneOut",
    "MeasureValued",
    "MovingAverage",
    "MovingAverageState",
    "NoBaseline",
    "OptimalScale",
    "Pathwise",
    "Rebar",
    "Relax",
    "ScoreFunction",
    "StraightThrough",
    "__version__",
    "baseline_advantages",
    "batch_normalized_advantages",
    "chain_dependencies",
    "diagnostics",
    "dice_surrogate",
    "enumerate_expectation",
    "estimator_table",
    "expectation",
    "fisher",
    "group_mean_advantages",
    "group_normalized_advantages",
    "grouped_advantages",
    "logits_of",
    "magic_box",
    "moving_average_advantages",
    "problems",
    "rank_advantages",
    "reinforce_advantages",
    "rloo_advantages",
    "sample_completions",
    "score",
    "sequence_log_probs",
    "sequence_surrogate",
    "surrogate",
    "token_kl",
    "token_log_probs",
    "variance_backward",
    "vimco_signals",
    "vimco_surrogate",
]
