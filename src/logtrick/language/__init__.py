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
from logtrick.language.config import LM_ALGOS, LMConfig
from logtrick.language.generation import generate_completions, left_pad
from logtrick.language.scoring import Scores, score_completions, sequence_log_probs
from logtrick.language.sequence import sequence_surrogate, token_kl
from logtrick.language.tokens import (
    Completions,
    logits_of,
    sample_completions,
    token_log_probs,
)
from logtrick.language.toy import char_tokenizer, tiny_causal_lm
from logtrick.language.trainer import Trainer

__all__ = [
    "LM_ALGOS",
    "Completions",
    "GroupedAdvantages",
    "LMConfig",
    "MovingAverageState",
    "Scores",
    "Trainer",
    "baseline_advantages",
    "batch_normalized_advantages",
    "char_tokenizer",
    "generate_completions",
    "group_mean_advantages",
    "group_normalized_advantages",
    "grouped_advantages",
    "left_pad",
    "logits_of",
    "moving_average_advantages",
    "rank_advantages",
    "reinforce_advantages",
    "rloo_advantages",
    "sample_completions",
    "score_completions",
    "sequence_log_probs",
    "sequence_surrogate",
    "tiny_causal_lm",
    "token_kl",
    "token_log_probs",
]
