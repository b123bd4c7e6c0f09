"""Every public name of :mod:`logtrick`, imported together on first use of any of them.

``logtrick/__init__.py`` loads this module when a name of its ``__all__`` is first looked up
(PEP 562), so ``import logtrick`` and ``logtrick --help`` do not import torch. Each import here
is a public name (listed in ``logtrick.__all__``; ``tests/test_packaging.py`` checks both agree).
"""

# ruff: noqa: F401
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
from logtrick.estimators import ESTIMATORS, estimator_table, expectation
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
from logtrick.language.scoring import sequence_log_probs
from logtrick.language.sequence import sequence_surrogate, token_kl
from logtrick.language.tokens import (
    Completions,
    logits_of,
    sample_completions,
    token_log_probs,
)
from logtrick.measure_valued import DeltaMethod, MeasureValued
from logtrick.pathwise import Auto, Pathwise
from logtrick.rebar import Rebar, Relax, variance_backward
from logtrick.score_function import ScoreFunction
from logtrick.scores import fisher, score
from logtrick.stochastic_graph import chain_dependencies, dice_surrogate
from logtrick.surrogates import surrogate
from logtrick.vimco import vimco_signals, vimco_surrogate
