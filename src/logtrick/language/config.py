"""The language-model trainer's settings: one frozen dataclass, and what each algorithm means.

An algorithm is a row of :data:`LM_ALGOS`: how the advantages are computed
(:func:`logtrick.grouped_advantages`, or GAE from a value head for PPO) and how token losses are
reduced (:func:`logtrick.sequence_surrogate`). Options left ``None`` take the algorithm's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from logtrick.checks import (
    check_choice,
    check_in_range,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)
from logtrick.language.advantages import METHODS
from logtrick.language.sequence import KL_ESTIMATORS, RATIO_LEVELS, REDUCTIONS

__all__ = ["LM_ALGOS", "LMConfig"]

LM_ALGOS: dict[str, tuple[str, str, float | None]] = {
    "rloo": ("rloo", "sequence_sum", None),
    "grpo": ("grpo", "sequence_mean", None),
    "dr_grpo": ("dr_grpo", "constant", None),
    "dapo": ("grpo", "token_mean", 0.28),
    "reinforce_pp": ("reinforce_plus_plus", "bnpo", None),
    "ppo": ("gae", "bnpo", None),
}
"""``algo -> (advantages, reduction, clip_eps_high)``. ``dr_grpo`` divides by ``max_new_tokens``;
``dapo`` by the generation batch's token count (all minibatches and ranks), with clip-higher
0.28; ``ppo`` takes per-token GAE advantages from a linear value head on the last hidden state
(whitened over the batch), and adds ``vf_coef`` times the squared error of the values."""
LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LMConfig:
    """Settings of :class:`logtrick.language.Trainer`; defaults follow TRL's ``GRPOConfig``
    where it has the same knob (``k`` = ``num_generations``, ``clip_eps`` = ``epsilon``)."""

    algo: str = "grpo"
    """One of :data:`LM_ALGOS`."""
    k: int = 8
    """Completions per prompt (the group)."""
    prompts_per_step: int = 8
    """Prompts per generation step, over all ranks (divisible by the number of ranks)."""
    max_new_tokens: int = 32
    """Length limit of a completion (Dr. GRPO's constant)."""
    temperature: float = 1.0
    """Sampling temperature; the log-probabilities are those of ``softmax(z / temperature)``."""
    top_p: float = 1.0
    """Nucleus sampling (1: off)."""
    top_k: int = 0
    """Top-k sampling (0: off)."""
    epochs: int = 1
    """Passes over each generation batch."""
    minibatches: int = 1
    """Optimizer steps per pass (the generation batch split in this many)."""
    micro_batch_size: int | None = None
    """Completions per forward/backward; a minibatch is accumulated from micro-batches
    (gradient accumulation). ``None``: the whole minibatch at once."""
    lr: float = 1e-5
    """Adam(W) learning rate (peak, after warm-up)."""
    lr_schedule: str = "constant"
    """``"constant"``, ``"linear"`` (to 0) or ``"cosine"`` (to 0) over the steps of ``learn``."""
    warmup_steps: int = 0
    """Generation steps of linear warm-up."""
    total_steps: int | None = None
    """Horizon of the ``"linear"`` and ``"cosine"`` schedules (required by them)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm (``None``: no clipping)."""
    clip_eps: float = 0.2
    """Lower (and, without ``clip_eps_high``, upper) epsilon of the clipped ratio."""
    clip_eps_high: float | None = None
    """Upper epsilon (DAPO's clip-higher); ``None``: the algorithm's (``dapo``: 0.28)."""
    kl_coef: float = 0.0
    """KL penalty to the reference (the PEFT model with its adapter off, or ``ref_model``)."""
    kl_estimator: str = "k3"
    """``"k1"``, ``"k2"`` or ``"k3"`` (:func:`logtrick.token_kl`)."""
    loss_type: str | None = None
    """A reduction of :func:`logtrick.sequence_surrogate`; ``None``: the algorithm's."""
    advantages: str | None = None
    """A method of :func:`logtrick.grouped_advantages`; ``None``: the algorithm's."""
    ratio_level: str = "token"
    """``"token"`` or ``"sequence"`` (GSPO)."""
    mask_truncated: bool = False
    """Leave completions cut at ``max_new_tokens`` out of the loss (DAPO's overlong masking)."""
    entropy_coef: float = 0.0
    """Entropy bonus per token."""
    bf16: bool = False
    """Run forward passes under ``torch.autocast(dtype=bfloat16)`` (CPU and CUDA)."""
    gamma: float = 1.0
    """PPO: discount over tokens."""
    gae_lambda: float = 0.95
    """PPO: GAE lambda."""
    vf_coef: float = 0.1
    """PPO: weight of the value loss."""
    chunk_size: int | None = None
    """Completion positions per chunk of logits (:func:`logtrick.language.score_completions`)."""
    seed: int = 0
    """Seeds the prompt order, sampling and initialisation of the value head."""
    save_every: int = 0
    """Checkpoint every this many steps (0: at the end of each ``learn``)."""
    tensorboard: bool = True
    """Also write TensorBoard events (besides ``metrics.csv``)."""
    progress: bool = True
    """Show a progress bar (rich) on rank 0."""

    def __post_init__(self) -> None:
        check_choice("algo", self.algo, tuple(LM_ALGOS))
        for name in ("k", "prompts_per_step", "max_new_tokens", "epochs", "minibatches"):
            check_positive_int(name, getattr(self, name))
        if self.k < 2 and self.adv_method in ("rloo", "grpo"):
            raise ValueError(
                f"k: {self.adv_method} needs k >= 2 completions per prompt, got {self.k}"
            )
        if self.micro_batch_size is not None:
            check_positive_int("micro_batch_size", self.micro_batch_size)
        for name in ("temperature", "lr", "clip_eps"):
            check_positive(name, getattr(self, name))
        check_in_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        for name in ("top_k", "warmup_steps", "save_every", "seed"):
            check_nonnegative_int(name, getattr(self, name))
        for name in ("weight_decay", "kl_coef", "entropy_coef", "vf_coef"):
            check_nonnegative(name, getattr(self, name))
        for name in ("max_grad_norm", "clip_eps_high"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.total_steps is not None:
            check_positive_int("total_steps", self.total_steps)
        elif self.lr_schedule != "constant":
            raise ValueError(f"total_steps: lr_schedule={self.lr_schedule!r} needs the horizon")
        check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        check_choice("ratio_level", self.ratio_level, RATIO_LEVELS)
        if self.loss_type is not None:
            check_choice("loss_type", self.loss_type, REDUCTIONS)
        if self.advantages is not None:
            check_choice(
                "advantages", self.advantages, tuple(m for m in METHODS if m != "baseline")
            )
        check_in_range("gamma", self.gamma, 0.0, 1.0)
        check_in_range("gae_lambda", self.gae_lambda, 0.0, 1.0)

    @property
    def adv_method(self) -> str:
        """The advantage method: ``advantages`` or the algorithm's (``"gae"`` for PPO)."""
        return self.advantages or LM_ALGOS[self.algo][0]

    @property
    def reduction(self) -> str:
        """The reduction of token losses: ``loss_type`` or the algorithm's."""
        return self.loss_type or LM_ALGOS[self.algo][1]

    @property
    def eps_high(self) -> float | None:
        """The upper clip epsilon in effect."""
        return self.clip_eps_high if self.clip_eps_high is not None else LM_ALGOS[self.algo][2]

    @property
    def completions_per_step(self) -> int:
        """Completions per generation step over all ranks."""
        return self.prompts_per_step * self.k

    def lr_at(self, step: int) -> float:
        """The learning rate of generation step ``step`` (0-based): warm-up, then the schedule."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant" or self.total_steps is None:
            return self.lr
        frac = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        if self.lr_schedule == "linear":
            return self.lr * (1.0 - frac)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    def as_dict(self) -> dict[str, object]:
        """The fields, for ``config.json`` and TensorBoard's hparams."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
