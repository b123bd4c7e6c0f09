r"""Sampling completions with Hugging Face ``generate``: KV cache, left padding, top-p / top-k.

Prompts of different lengths are padded on the left with an attention mask, so every row
generates from its last real token, and the completions start at one column :math:`P`.
``generate`` samples (temperature, top-p, top-k, stop tokens, a length limit); the
log-probabilities of the sampled tokens are then recomputed by one forward pass without
gradient (:func:`logtrick.language.score_completions`), under
:math:`\operatorname{softmax}(z/\tau)`: the policy that the loss differentiates. With top-p or
top-k the sampler draws from a truncated version of it, and these log-probabilities are those of
the untruncated policy (as in TRL); sampling is then slightly off-policy. ``generate`` draws
from torch's global generator: seed it with ``torch.manual_seed``.
A model without ``generate`` (a plain module of logits) is sampled by
:func:`logtrick.language.sample_completions`, token by token, with equal-length prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from logtrick.checks import check_in_range, check_nonnegative_int, check_positive_int
from logtrick.language.models import is_hf_model
from logtrick.language.scoring import score_completions
from logtrick.language.tokens import Completions, sample_completions

__all__ = ["generate_completions", "left_pad"]

PromptIds = Tensor | Sequence[Sequence[int]]


def left_pad(prompts: PromptIds, pad_token: int) -> tuple[Tensor, Tensor]:
    """``(C, P)`` ids padded on the left with ``pad_token`` and the ``(C, P)`` bool mask of real
    tokens, from a ``(C, P)`` tensor (no padding) or lists of ids of any lengths (each >= 1)."""
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2 or prompts.shape[1] < 1 or prompts.is_floating_point():
            raise ValueError(
                f"prompts: expected (C, P) integer ids with P >= 1, got {prompts.dtype} "
                f"{tuple(prompts.shape)}"
            )
        return prompts, torch.ones_like(prompts, dtype=torch.bool)
    rows = [list(p) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("prompts: expected one or more prompts, each with at least one token")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = True
    return ids, mask


def _stop_mask(tokens: Tensor, stops: list[int]) -> tuple[Tensor, Tensor]:
    """Mask up to and including the first stop token of each row, and whether there was one."""
    is_stop = torch.isin(tokens, torch.tensor(stops, dtype=tokens.dtype, device=tokens.device))
    before = is_stop.long().cumsum(1) - is_stop.long()  # stop tokens strictly before t
    return before == 0, is_stop.any(1)


def _generation_config(
    max_new_tokens: int,
    sampling: tuple[float, float, int],
    stops: list[int],
    pad: int,
    greedy: bool,
) -> object:
    from transformers import GenerationConfig  # lazy: import logtrick stays light

    temperature, top_p, top_k = sampling
    extra = {} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": top_k}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=not greedy,
        eos_token_id=stops or None,
        pad_token_id=pad,
        use_cache=True,
        **extra,
    )


@torch.no_grad()
def generate_completions(
    model: nn.Module,
    prompts: PromptIds,
    k: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_tokens: int | Sequence[int] | None = None,
    pad_token: int | None = None,
    greedy: bool = False,
    chunk_size: int | None = None,
) -> Completions:
    r"""Draw ``k`` completions of each prompt, with their log-probabilities under the sampler.

    Args:
        model: a ``transformers`` causal LM (PEFT included), or a module of logits (then
            sampled by :func:`logtrick.language.sample_completions`: equal-length prompts, no
            top-p or top-k).
        prompts: ``(C, P)`` ids, or ``C`` lists of ids of any lengths (padded on the left).
        k: completions per prompt; row ``c * k + i`` is sample ``i`` of prompt ``c``.
        max_new_tokens: the length limit; the completions are right-padded to it, so the
            mask's width is this limit (Dr. GRPO's constant).
        temperature: :math:`\tau > 0`.
        top_p: nucleus sampling, in ``(0, 1]`` (1: off).
        top_k: keep the ``top_k`` most likely tokens (0: off).
        stop_tokens: id(s) that end a completion (included in it).
        pad_token: id for padding (default: the first stop token, else 0).
        greedy: the most likely token at each step.
        chunk_size: for the log-probabilities (:func:`logtrick.language.score_completions`).

    Returns:
        :class:`logtrick.language.Completions` with its ``attention_mask``.
    """
    stops = (
        []
        if stop_tokens is None
        else [stop_tokens]
        if isinstance(stop_tokens, int)
        else list(stop_tokens)
    )
    for s in stops:
        check_nonnegative_int("stop_tokens", s)
    pad = (stops[0] if stops else 0) if pad_token is None else pad_token
    check_nonnegative_int("pad_token", pad)
    check_positive_int("k", k)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_in_range("top_p", top_p, 0.0, 1.0, low_open=True)
    check_nonnegative_int("top_k", top_k)
    ids, prompt_mask = left_pad(prompts, pad)
    if not is_hf_model(model):
        if top_p < 1.0 or top_k > 0 or not bool(prompt_mask.all()):
            raise ValueError(
                "model: top_p, top_k and prompts of different lengths need a "
                "model with generate (a transformers causal LM)"
            )
        stop = stops[0] if len(stops) == 1 else None
        if len(stops) > 1:
            raise ValueError(f"stop_tokens: a model without generate takes one, got {stops}")
        c = sample_completions(model, ids, k, max_new_tokens, temperature, stop, pad, greedy)
        return _pad_to(c, max_new_tokens, pad)
    device = next(model.parameters()).device
    ids, prompt_mask = ids.repeat_interleave(k, 0).to(device), prompt_mask.repeat_interleave(k, 0)
    prompt_mask = prompt_mask.to(device)
    config = _generation_config(max_new_tokens, (temperature, top_p, top_k), stops, pad, greedy)
    out = model.generate(  # type: ignore[operator]
        input_ids=ids, attention_mask=prompt_mask.long(), generation_config=config
    )
    p = ids.shape[1]
    tokens = torch.full((ids.shape[0], max_new_tokens), pad, dtype=ids.dtype, device=device)
    tokens[:, : out.shape[1] - p] = out[:, p:]
    mask, stopped = _stop_mask(tokens, stops)
    mask[:, out.shape[1] - p :] = False
    tokens = torch.where(mask, tokens, pad)
    seq, attention = torch.cat([ids, tokens], 1), torch.cat([prompt_mask, mask], 1)
    lp = score_completions(model, seq, p, mask, attention, temperature, chunk_size).log_probs
    return Completions(seq, tokens, mask, lp, stopped, p, attention)


def _pad_to(c: Completions, width: int, pad: int) -> Completions:
    """``c`` with its completions right-padded to ``width`` columns."""
    extra = width - c.tokens.shape[1]
    if extra == 0:
        return c
    tokens = nn.functional.pad(c.tokens, (0, extra), value=pad)
    mask = nn.functional.pad(c.mask, (0, extra), value=False)
    lp = nn.functional.pad(c.log_probs, (0, extra), value=0.0)
    seq = torch.cat([c.sequences[:, : c.prompt_length], tokens], 1)
    return Completions(seq, tokens, mask, lp, c.stopped, c.prompt_length, None)
