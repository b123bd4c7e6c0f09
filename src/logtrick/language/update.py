"""One generation batch's updates: epochs x minibatches x micro-batches of the sequence surrogate.

Every micro-batch's loss is :func:`logtrick.sequence_surrogate` weighted so that the accumulated
gradient of a minibatch equals the gradient of the minibatch's loss computed at once: sequence
reductions by the micro-batch's share of sequences, token reductions by an explicit token
count (``bnpo``: the minibatch's, ``token_mean``: the whole generation batch's over all ranks).
Gradients are averaged over ranks before clipping and the optimizer step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from logtrick.collective import all_reduce_sum, world_size
from logtrick.language.config import LMConfig
from logtrick.language.scoring import score_completions
from logtrick.language.sequence import sequence_surrogate

__all__ = ["GenerationBatch", "token_gae", "update_policy", "whiten"]


@dataclass(frozen=True)
class GenerationBatch:
    """This rank's completions, ready for the loss (width trimmed to the longest)."""

    sequences: Tensor
    attention_mask: Tensor
    prompt_length: int
    mask: Tensor
    old_log_probs: Tensor
    ref_log_probs: Tensor | None
    advantages: Tensor
    returns: Tensor | None
    token_total: float
    """Valid tokens of the whole generation batch over all ranks, divided by the ranks."""

    def rows(self, index: Tensor) -> GenerationBatch:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return GenerationBatch(
            self.sequences[index],
            self.attention_mask[index],
            self.prompt_length,
            self.mask[index],
            self.old_log_probs[index],
            pick(self.ref_log_probs),
            self.advantages[index],
            pick(self.returns),
            self.token_total,
        )


def token_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Per-token GAE advantages and returns ``(B, L)``: the reward on the last valid token, a
    terminal step after it, values of the states before each token (time-major inside)."""
    from logtrick.rl.returns import compute_gae  # lazy: import logtrick does not load rl/

    length = mask.shape[1]
    last = (mask.sum(1) - 1).clamp_min(0)
    t = torch.arange(length, device=mask.device)[:, None]
    end = t == last[None]
    r = torch.where(end, rewards[None].to(values.dtype), 0.0)
    v = values.t()
    nxt = torch.cat([v[1:], torch.zeros_like(v[:1])])
    adv, ret = compute_gae(r, v, nxt, end, torch.zeros_like(end), gamma, lam, check=False)
    return adv.t(), ret.t()


def _micro_loss(
    model: nn.Module,
    value_head: nn.Module | None,
    b: GenerationBatch,
    cfg: LMConfig,
    scale: tuple[float, float | None],
) -> tuple[Tensor, dict[str, Tensor]]:
    weight, tokens = scale
    s = score_completions(
        model,
        b.sequences,
        b.prompt_length,
        b.mask,
        b.attention_mask,
        cfg.temperature,
        cfg.chunk_size,
        hidden=value_head is not None,
        entropy=True,
    )
    reduction = "token_mean" if tokens is not None else cfg.reduction
    constant = (
        tokens
        if tokens is not None
        else (float(cfg.max_new_tokens) if cfg.reduction == "constant" else None)
    )
    loss, info = sequence_surrogate(
        s.log_probs,
        b.mask,
        b.advantages,
        reduction,
        constant,
        b.old_log_probs,
        cfg.clip_eps,
        b.ref_log_probs,
        cfg.kl_coef,
        cfg.kl_estimator,
        clip_eps_high=cfg.eps_high,
        ratio_level=cfg.ratio_level,
        entropy=s.entropy,
        entropy_coef=cfg.entropy_coef,
    )
    if value_head is not None and b.returns is not None and s.hidden is not None:
        v = value_head(s.hidden.float()).squeeze(-1)
        sq = torch.where(b.mask, (v - b.returns) ** 2, 0.0).sum()
        loss = loss + cfg.vf_coef * 0.5 * sq / (
            tokens if tokens is not None else b.mask.sum().clamp_min(1)
        )
        info["value_loss"] = (sq / b.mask.sum().clamp_min(1)).detach()
    return loss * weight, info


def _sync_gradients(params: list[Tensor]) -> None:
    """Average the gradients over ranks (one all-reduce; nothing without torch.distributed)."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p, g in zip(params, all_reduce_sum(grads, default=True)):
        p.grad = g / n


def _micro_batches(size: int, micro: int | None) -> Iterator[slice]:
    step = size if micro is None else micro
    for i in range(0, size, step):
        yield slice(i, min(i + step, size))


def _scale(cfg: LMConfig, b: GenerationBatch, part: slice, n: int) -> tuple[float, float | None]:
    """(weight of the micro-batch's loss, token divisor or None) for the reduction in use."""
    if cfg.reduction == "token_mean":
        return 1.0, b.token_total
    if cfg.reduction == "bnpo" or cfg.adv_method == "gae":
        return 1.0, float(b.mask.sum().clamp_min(1))
    return (part.stop - part.start) / n, None


def _grad_snr(pieces: list[Tensor]) -> float:
    """||G||^2 / Var(G) of the minibatch gradient G from its micro-batch pieces (NaN if < 2)."""
    n = len(pieces)
    if n < 2:
        return math.nan
    est = torch.stack(pieces) * n  # each piece scaled up estimates the whole gradient
    mean = est.mean(0)
    var = (est - mean).pow(2).sum() / (n - 1) / n
    return float(mean.pow(2).sum() / var) if float(var) > 0 else math.inf


def _flat_grad(params: list[Tensor]) -> Tensor:
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
            for p in params
        ]
    )


def update_policy(
    model: nn.Module,
    value_head: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    batch: GenerationBatch,
    cfg: LMConfig,
    generator: torch.Generator,
    autocast: Callable[[], contextlib.AbstractContextManager[object]],
) -> dict[str, float]:
    """``epochs`` passes of ``minibatches`` optimizer steps; the means of their diagnostics."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sums: dict[str, float] = {}
    steps = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(batch.mask.shape[0], generator=generator)
        for mb_index in order.tensor_split(cfg.minibatches):
            mb = batch.rows(mb_index)
            optimizer.zero_grad(set_to_none=True)
            pieces, prev, n = [], None, mb_index.numel()
            track = cfg.micro_batch_size is not None and cfg.micro_batch_size < n
            for part in _micro_batches(n, cfg.micro_batch_size):
                with autocast():
                    loss, info = _micro_loss(
                        model,
                        value_head,
                        mb.rows(torch.arange(n)[part]),
                        cfg,
                        _scale(cfg, mb, part, n),
                    )
                loss.backward()
                if track:  # the micro-batch's own gradient, for the SNR
                    flat = _flat_grad(params)
                    pieces.append(flat if prev is None else flat - prev)
                    prev = flat
                for key, value in info.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * (part.stop - part.start) / n
            _sync_gradients(params)
            norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(norm)
            sums["grad_snr"] = sums.get("grad_snr", 0.0) + _grad_snr(pieces)
            optimizer.step()
            steps += 1
    return {k: v / steps for k, v in sums.items() if k != "tokens"}


def whiten(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` minus its mean over valid entries, over their standard deviation (all ranks)."""
    xm = torch.where(mask, x, 0.0).double()
    n, s, ss = all_reduce_sum([mask.sum().double(), xm.sum(), xm.pow(2).sum()], default=True)
    mean = s / n.clamp_min(1)
    std = (ss / n.clamp_min(1) - mean**2).clamp_min(0).sqrt()
    return torch.where(mask, (x - mean) / (std + 1e-8), 0.0).float()
