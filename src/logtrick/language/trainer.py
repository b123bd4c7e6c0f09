r"""RL fine-tuning of a causal LM: sample groups, score them, update, log, checkpoint.

.. code-block:: python

    trainer = lt.language.Trainer(model, tokenizer, prompts, [correct], algo="grpo",
                                  config=lt.language.LMConfig(k=8, lr=1e-4), run_dir="runs/a")
    trainer.learn(100)          # generation steps; resumes from run_dir/checkpoint.pt if present

Each step takes ``prompts_per_step`` prompts (a fresh permutation per pass over the data), draws
``k`` completions of each with :func:`logtrick.language.generate_completions`, scores them with
the reward functions, computes the advantages over the whole generation batch (gathered across
ranks) and runs :func:`logtrick.language.update.update_policy`. The model stays in ``eval()``
mode (no dropout: the importance ratio is exactly 1 on-policy). Randomness is a function of
``(seed, step, rank)`` (the global generator is reseeded every step for ``generate``), so a run
resumed from its checkpoint continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from logtrick.collective import all_reduce_sum, world_size
from logtrick.language.advantages import grouped_advantages
from logtrick.language.config import LMConfig
from logtrick.language.generation import generate_completions
from logtrick.language.models import reference_policy, split_head
from logtrick.language.prompts import PromptSet, call_rewards, check_rewards, render_prompt
from logtrick.language.report import RunLog, step_metrics
from logtrick.language.scoring import score_completions
from logtrick.language.tokens import Completions
from logtrick.language.update import GenerationBatch, token_gae, update_policy, whiten

__all__ = ["Trainer"]

CHECKPOINT = "checkpoint.pt"
FREE_FIELDS = ("save_every", "tensorboard", "progress", "total_steps")


def _rank() -> int:
    return torch.distributed.get_rank() if world_size() > 1 else 0


class Trainer:
    """RL fine-tuning of a causal LM with reward functions; see the module for the loop.

    Args:
        model: a ``transformers`` causal LM (a ``peft.PeftModel`` included: only its trainable
            parameters are updated and the KL reference is the model with the adapter off) or
            a plain module of logits (sampled without ``generate``; equal-length prompts).
        tokenizer: a ``transformers`` tokenizer (``__call__``, ``batch_decode``; a chat
            template for chat prompts).
        prompts: a list of strings or of chat conversations, or a ``datasets.Dataset`` with a
            ``"prompt"`` column (the other columns go to the reward functions).
        rewards: ``f(prompts, completions, **columns) -> list[float]`` or a list of them.
        algo: ``rloo | grpo | dr_grpo | dapo | reinforce_pp | ppo``; overrides ``config.algo``.
        config: :class:`LMConfig`.
        reward_weights: one weight per reward function (default 1).
        checker: ``f(prompts, completions, **columns) -> list[bool]``: the accuracy metric and
            the lengths of right and wrong completions.
        ref_model: the KL reference when the model is not a PEFT model (frozen; ``kl_coef > 0``).
        run_dir: where ``metrics.csv``, TensorBoard events, ``learning_curve.png`` and
            ``checkpoint.pt`` go (rank 0 only); an existing checkpoint there is resumed.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompts: object,
        rewards: object,
        algo: str | None = None,
        config: LMConfig | None = None,
        *,
        reward_weights: Sequence[float] | None = None,
        checker: Callable[..., Sequence[bool]] | None = None,
        ref_model: nn.Module | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch nn.Module (a causal LM), got {type(model)}")
        if not callable(tokenizer) or not hasattr(tokenizer, "batch_decode"):
            raise TypeError(f"tokenizer: expected a transformers tokenizer, got {type(tokenizer)}")
        if config is not None and not isinstance(config, LMConfig):
            raise TypeError(f"config: expected an LMConfig, got {type(config).__name__}")
        self.config = cfg = config or LMConfig()
        if algo is not None:
            self.config = cfg = replace(cfg, algo=algo)
        if checker is not None and not callable(checker):
            raise TypeError(f"checker: expected a function returning list[bool], got {checker!r}")
        self.model, self.tokenizer, self.checker, self.ref_model = (
            model,
            tokenizer,
            checker,
            ref_model,
        )
        self.data = PromptSet(prompts)
        self.reward_fns, self.reward_weights = check_rewards(rewards, reward_weights)
        self.rank, self.world = _rank(), world_size()
        if cfg.prompts_per_step % self.world:
            raise ValueError(
                f"prompts_per_step: {cfg.prompts_per_step} is not divisible by the "
                f"{self.world} ranks"
            )
        if cfg.kl_coef > 0 and ref_model is None and not hasattr(model, "disable_adapter"):
            raise ValueError("ref_model: kl_coef > 0 needs ref_model or a PEFT model")
        self.value_head = self._make_value_head() if cfg.adv_method == "gae" else None
        params = [p for p in model.parameters() if p.requires_grad]
        if self.value_head is not None:
            params += list(self.value_head.parameters())
        if not params:
            raise ValueError("model: no parameter requires grad (nothing to train)")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.stop_tokens = [] if eos is None else [int(eos)]
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token = int(pad) if pad is not None else (self.stop_tokens or [0])[0]
        self.step, self.completions = 0, 0
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.history: list[dict[str, float]] = []
        if self.run_dir is not None and (self.run_dir / CHECKPOINT).exists():
            self.load(self.run_dir / CHECKPOINT)

    def _make_value_head(self) -> nn.Module:
        split = split_head(self.model)
        if split is None:
            raise ValueError(
                "algo: 'ppo' needs a transformers causal LM (its value head reads "
                "the last hidden state)"
            )
        head = nn.Linear(int(split[1].weight.shape[1]), 1)  # type: ignore[index]
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return head.to(next(self.model.parameters()).device)

    # ------------------------------------------------------------------ the loop

    def learn(
        self, steps: int, callback: Callable[[dict[str, float]], object] | None = None
    ) -> dict[str, float]:
        """Run ``steps`` generation steps; ``callback(metrics)`` returning True stops early.
        Returns the last step's metrics."""
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        log = RunLog(self.run_dir if self.rank == 0 else None, self.config, self.step)
        row: dict[str, float] = {}
        try:
            for _ in log.progress(steps):
                row = self.train_step()
                log.log(row)
                if self.config.save_every and self.step % self.config.save_every == 0:
                    self.save()
                if callback is not None and callback(row) is True:
                    break
            self.save()
        finally:
            log.close()
        return row

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if not self.config.bf16:
            return contextlib.nullcontext()
        device = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device, dtype=torch.bfloat16)

    def _prompt_rows(self) -> list[int]:
        """This rank's prompt rows of the current step: permutation ``e`` over the data for
        pass ``e``, seeded by ``(seed, e)``."""
        n, c = len(self.data), self.config.prompts_per_step
        rows = []
        for pos in range(self.step * c, (self.step + 1) * c):
            perm = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.config.seed * 7919 + pos // n)
            )
            rows.append(int(perm[pos % n]))
        per = c // self.world
        return rows[self.rank * per : (self.rank + 1) * per]

    def _generate(self, prompts: list[Any], k: int, greedy: bool = False) -> Completions:
        texts = [render_prompt(self.tokenizer, p) for p in prompts]
        ids = self.tokenizer(texts)["input_ids"]
        cfg = self.config
        self.model.eval()
        with self._autocast():
            return generate_completions(
                self.model,
                ids,
                k,
                cfg.max_new_tokens,
                cfg.temperature,
                cfg.top_p,
                cfg.top_k,
                self.stop_tokens,
                self.pad_token,
                greedy,
                cfg.chunk_size,
            )

    def _decode(self, c: Completions) -> list[str]:
        rows = [t[m].tolist() for t, m in zip(c.tokens, c.mask)]
        return list(self.tokenizer.batch_decode(rows, skip_special_tokens=True))

    def train_step(self) -> dict[str, float]:
        """One generation step and its updates; the step's metrics (the same on every rank)."""
        cfg = self.config
        torch.manual_seed(cfg.seed * 1_000_003 + self.step * 101 + self.rank)  # for generate
        t0 = time.perf_counter()
        prompts, columns = self.data.rows(self._prompt_rows())
        c = self._generate(prompts, cfg.k)
        texts = self._decode(c)
        rep = lambda xs: [x for x in xs for _ in range(cfg.k)]  # noqa: E731
        rep_prompts, rep_cols = rep(prompts), {key: rep(v) for key, v in columns.items()}
        total, per_fn = call_rewards(
            self.reward_fns, self.reward_weights, rep_prompts, texts, rep_cols
        )
        correct = None
        if self.checker is not None:
            correct = [bool(x) for x in self.checker(rep_prompts, texts, **rep_cols)]
        t_gen = time.perf_counter() - t0
        batch = self._batch(c, torch.tensor(total, dtype=torch.float64))
        self.optimizer.param_groups[0]["lr"] = lr = cfg.lr_at(self.step)
        stats = update_policy(
            self.model,
            self.value_head,
            self.optimizer,
            batch,
            cfg,
            torch.Generator().manual_seed(cfg.seed * 31 + self.step),
            self._autocast,
        )
        self.step += 1
        self.completions += cfg.completions_per_step
        counts = (self.step, self.completions, self.world)
        row = step_metrics(c, total, per_fn, correct, stats, counts)
        row.update(lr=lr, time_generate=t_gen, time_update=time.perf_counter() - t0 - t_gen)
        self.history.append(row)
        return row

    def _batch(self, c: Completions, rewards: Tensor) -> GenerationBatch:
        """Advantages (over the gathered generation batch), references, trimmed tensors."""
        cfg = self.config
        device = c.tokens.device
        width = max(int(c.mask.sum(1).max()), 1)
        seq, att = c.sequences[:, : c.prompt_length + width], c.attention_mask
        att = torch.ones_like(seq, dtype=torch.bool) if att is None else att[:, : seq.shape[1]]
        mask, old = c.mask[:, :width], c.log_probs[:, :width]
        if cfg.mask_truncated:
            mask = mask & c.stopped[:, None]
        ref = returns = None
        if cfg.kl_coef > 0:
            with reference_policy(self.model, self.ref_model) as r, self._autocast():
                ref = score_completions(
                    r, seq, c.prompt_length, mask, att, cfg.temperature, cfg.chunk_size
                ).log_probs
        if self.value_head is not None:
            with torch.no_grad(), self._autocast():
                h = score_completions(
                    self.model,
                    seq,
                    c.prompt_length,
                    c.mask[:, :width],
                    att,
                    cfg.temperature,
                    cfg.chunk_size,
                    hidden=True,
                ).hidden
                values = self.value_head(h.float()).squeeze(-1)  # type: ignore[union-attr]
            adv, returns = token_gae(
                rewards.float().to(device), values, c.mask[:, :width], cfg.gamma, cfg.gae_lambda
            )
            adv = whiten(adv, mask)
        else:
            adv = self._group_advantages(rewards).to(device)
        total = all_reduce_sum([mask.sum().double()], default=True)[0]
        return GenerationBatch(
            seq,
            att,
            c.prompt_length,
            mask,
            old,
            ref,
            adv,
            returns,
            max(float(total) / self.world, 1.0),
        )

    def _group_advantages(self, rewards: Tensor) -> Tensor:
        """Advantages of this rank's rows, computed on the rewards of all ranks."""
        cfg = self.config
        n = rewards.numel()
        full = torch.zeros(n * self.world, dtype=torch.float64)
        full[self.rank * n : (self.rank + 1) * n] = rewards
        full = all_reduce_sum([full], default=True)[0]
        adv = grouped_advantages(full.view(-1, cfg.k), cfg.adv_method).advantages.reshape(-1)
        return adv[self.rank * n : (self.rank + 1) * n].float()

    # ------------------------------------------------------------------ use and checkpoints

    @torch.no_grad()
    def generate(self, prompts: Sequence[Any], greedy: bool = True, k: int = 1) -> list[str]:
        """Completions (text) of ``prompts``: greedy, or ``k`` samples each."""
        return self._decode(self._generate(list(prompts), k, greedy))

    def evaluate(
        self,
        prompts: object,
        checker: Callable[..., Sequence[bool]] | None = None,
        batch_size: int = 64,
    ) -> float:
        """Greedy accuracy on ``prompts`` (a list or Dataset, as in the constructor)."""
        check = checker or self.checker
        if check is None:
            raise ValueError("checker: evaluate needs a checker (here or in the constructor)")
        data, right = PromptSet(prompts), 0
        for i in range(0, len(data), batch_size):
            ps, cols = data.rows(range(i, min(i + batch_size, len(data))))
            right += sum(bool(x) for x in check(ps, self.generate(ps), **cols))
        return right / len(data)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers: trainable weights, optimizer, counters, config."""
        trainable = {
            k: p.detach().clone() for k, p in self.model.named_parameters() if p.requires_grad
        }
        head = {} if self.value_head is None else self.value_head.state_dict()
        return {
            "format": "logtrick-lm-1",
            "step": self.step,
            "completions": self.completions,
            "model": trainable,
            "value_head": head,
            "optimizer": self.optimizer.state_dict(),
            "config": json.dumps(self.config.as_dict()),
        }

    def save(self, path: str | Path | None = None) -> None:
        """Write the checkpoint atomically (rank 0; default ``run_dir/checkpoint.pt``)."""
        from logtrick.rl.runs import save_checkpoint

        target = (
            path
            if path is not None
            else None
            if self.run_dir is None
            else self.run_dir / CHECKPOINT
        )
        if target is not None and self.rank == 0:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(target, self.state_dict())

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` (the config must match but for
        ``save_every``, ``tensorboard``, ``progress`` and ``total_steps``)."""
        from logtrick.rl.runs import load_checkpoint

        state = load_checkpoint(path)
        saved, now = json.loads(state["config"]), self.config.as_dict()
        for key, value in saved.items():
            if key not in FREE_FIELDS and now.get(key) != value:
                raise ValueError(
                    f"config: {path} was trained with {key}={value!r}, got {key}={now.get(key)!r}"
                )
        params = dict(self.model.named_parameters())
        missing = [k for k in state["model"] if k not in params]
        if missing:
            raise ValueError(
                f"model: the checkpoint has parameters this model lacks: {missing[:3]}"
            )
        with torch.no_grad():
            for key, value in state["model"].items():
                params[key].copy_(value)
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.completions = int(state["step"]), int(state["completions"])
