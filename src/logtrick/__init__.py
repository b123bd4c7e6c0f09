"""logtrick: the log-derivative trick in PyTorch.

Unbiased, low-variance gradients of expectations whose integrand may be a black box, and a small,
fast policy-gradient trainer built on the same estimator (:mod:`logtrick.rl`).

The public names are imported on first use (PEP 562): ``import logtrick`` is cheap and
``logtrick --help`` answers without torch; the first ``logtrick.NAME`` imports them all
(:mod:`logtrick._api`), estimators registered by short name included.
"""

# ruff: noqa: F405  (the names of __all__ are defined by __getattr__, or the star import for checkers)
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see: the names, from where they live
    from logtrick._api import *  # noqa: F403

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


def __getattr__(name: str) -> Any:
    """Import every public name at the first use of one (then they are plain attributes).

    A submodule that is not one of those names (``from logtrick import rl``) is imported alone:
    the estimators' imports are not its to pay."""
    if name not in __all__ and _is_submodule(name):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if not name.startswith("_"):
        from logtrick import _api

        globals().update({k: v for k, v in vars(_api).items() if not k.startswith("_")})
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module 'logtrick' has no attribute {name!r}")


def _is_submodule(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(f"{__name__}.{name}") is not None


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
