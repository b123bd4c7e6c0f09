"""Sequence models: the policy-gradient loss of token sequences, grouped advantages for k samples
per prompt, and token log-probabilities and sampling for causal language models.

The public names are also ``lt.*`` (``lt.sequence_surrogate``, ``lt.grouped_advantages``, ...)."""

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

__all__ = [
    "Completions",
    "GroupedAdvantages",
    "MovingAverageState",
    "baseline_advantages",
    "batch_normalized_advantages",
    "group_mean_advantages",
    "group_normalized_advantages",
    "grouped_advantages",
    "logits_of",
    "moving_average_advantages",
    "rank_advantages",
    "reinforce_advantages",
    "rloo_advantages",
    "sample_completions",
    "sequence_log_probs",
    "sequence_surrogate",
    "token_kl",
    "token_log_probs",
]
