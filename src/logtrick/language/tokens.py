r"""Token log-probabilities and sampling for causal language models (any ``nn.Module`` of logits).

A causal model maps tokens ``(B, T)`` to next-token logits ``(B, T, V)``: position ``t`` scores
token ``t + 1``. A completion :math:`y` of a prompt :math:`x` then has

.. math::  \log \pi(y \mid x) = \sum_t \log \operatorname{softmax}(z_t / \tau)[y_t],

with :math:`z_t` the logits at the position before :math:`y_t` and :math:`\tau` the sampling
temperature. :func:`token_log_probs` computes the terms from logits (stable, chunked, masked),
:func:`sequence_log_probs` runs the model on prompt + completion, and
:func:`sample_completions` draws ``k`` completions per prompt up to a stop token. The outputs
feed :func:`logtrick.sequence_surrogate` and :func:`logtrick.grouped_advantages`.

The model may return a tensor of logits, an object with a ``logits`` attribute (a Hugging Face
``transformers`` causal LM's output) or a tuple whose first element is the logits. Prompts in
one call share a length (no left padding: group prompts by length, or pad them with a token
the model was trained to ignore); completions are padded on the right after their stop token,
which a causal model never looks back at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from logtrick.checks import (
    check_bool_tensor,
    check_floating,
    check_integer_tensor,
    check_ndim,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)

__all__ = [
    "Completions",
    "logits_of",
    "sample_completions",
    "sequence_log_probs",
    "token_log_probs",
]

CHUNK_ELEMENTS = 1 << 24
"""Default chunk: rows of logits holding at most this many elements (64 MiB in float32)."""


def logits_of(output: object) -> Tensor:
    """The logits in a model's output: the tensor itself, ``output.logits``, or ``output[0]``."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"model output: expected logits (a tensor, an object with .logits or a tuple whose "
            f"first element is the logits), got {type(output).__name__}"
        )
    return logits


class _GatherLogSoftmax(torch.autograd.Function):
    """``log_softmax(logits)[rows, tokens]`` chunk by chunk; the backward recomputes softmax.

    Neither pass materialises a float32 copy of all the logits (only the gradient, in the
    logits' dtype, is full size), and rows with ``valid`` False are never evaluated: their value
    and gradient are exactly 0. The backward is written with differentiable operations on the
    saved logits, so double backward works.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, tokens: Tensor, valid: Tensor, chunk: int) -> Tensor:
        out = []
        for i in range(0, logits.shape[0], chunk):
            z = _valid_rows(logits, valid, slice(i, i + chunk))
            picked = z.gather(-1, tokens[i : i + chunk, None])[:, 0] - z.logsumexp(-1)
            out.append(torch.where(valid[i : i + chunk], picked, 0.0))
        ctx.save_for_backward(logits, tokens, valid)
        ctx.chunk = chunk
        return torch.cat(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        logits, tokens, valid = ctx.saved_tensors
        parts = []
        for i in range(0, logits.shape[0], ctx.chunk):
            rows = slice(i, i + ctx.chunk)
            z = _valid_rows(logits, valid, rows)
            g = torch.where(valid[rows], grad[rows], 0.0)[:, None]
            onehot = nn.functional.one_hot(tokens[rows], z.shape[-1]).to(z.dtype)
            parts.append((g * (onehot - z.softmax(-1))).to(logits.dtype))
        return torch.cat(parts), None, None, None


def _valid_rows(logits: Tensor, valid: Tensor, rows: slice) -> Tensor:
    """Rows ``rows`` of the logits in float32 (float64 kept), masked rows replaced by zeros."""
    work = torch.promote_types(logits.dtype, torch.float32)
    return torch.where(valid[rows, None], logits[rows], 0.0).to(work)


def token_log_probs(
    logits: Tensor, tokens: Tensor, mask: Tensor | None = None, chunk_size: int | None = None
) -> Tensor:
    r"""Log-probabilities of chosen tokens, :math:`\log\operatorname{softmax}(z_{b,t})[y_{b,t}]`.

    .. math::  \log \pi(y_{b,t}) = z_{b,t}[y_{b,t}] - \log\sum_v \exp z_{b,t}[v]

    computed in float32 (float64 for float64 logits) with a stable log-sum-exp, ``chunk_size``
    positions at a time, so half-precision logits are never copied to float32 as a whole, in
    the forward or the backward pass (which recomputes the softmax per chunk). Positions where
    ``mask`` is False are never evaluated: their log-probability is 0 and no gradient reaches
    their logits, so they may hold anything (padding ids out of the vocabulary, ``-inf`` or NaN
    logits). Differentiable, twice.

    Args:
        logits: ``(..., V)`` logits aligned with ``tokens`` (position ``t`` scores token ``t``).
        tokens: ``(...)`` integer ids in ``[0, V)`` where valid.
        mask: ``(...)`` bool, ``True`` for valid positions; ``None`` for all.
        chunk_size: positions per chunk; default: as many as fit in :data:`CHUNK_ELEMENTS`.

    Returns:
        ``(...)`` log-probabilities, float32 (float64 for float64 logits), 0 where masked.
    """
    if check_floating("logits", logits).dim() < 1:
        raise ValueError("logits: expected shape (..., V) with a vocabulary dimension, got ()")
    check_integer_tensor("tokens", tokens)
    if tuple(tokens.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"tokens: expected shape {tuple(logits.shape[:-1])} (the logits' without the "
            f"vocabulary), got {tuple(tokens.shape)}"
        )
    valid = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
    check_bool_tensor("mask", valid, tokens.shape)
    vocab = logits.shape[-1]
    bad = valid & ((tokens < 0) | (tokens >= vocab))
    if bool(bad.any()):
        raise ValueError(
            f"tokens: {int(bad.sum())} valid ids outside [0, {vocab}), e.g. {int(tokens[bad][0])}"
        )
    chunk = max(CHUNK_ELEMENTS // max(vocab, 1), 1) if chunk_size is None else chunk_size
    check_positive_int("chunk_size", chunk)
    if tokens.numel() == 0:  # zero-length completions: nothing to score, still on the graph
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        return logits.sum(-1).to(dtype)
    flat = torch.where(valid, tokens.long(), 0).reshape(-1)  # uint8/int32 ids: gather needs int64
    out = _GatherLogSoftmax.apply(logits.reshape(-1, vocab), flat, valid.reshape(-1), chunk)
    return out.view(tokens.shape)


def sequence_log_probs(
    model: nn.Module,
    sequences: Tensor,
    prompt_length: int,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Token log-probabilities of the completions in ``sequences`` under a causal ``model``.

    .. math::  \log\pi(y_t \mid x, y_{<t}) = \log\operatorname{softmax}(z_{P+t-1} / \tau)[y_t]

    with :math:`z` the logits of ``model(sequences[:, :-1])`` and :math:`P` the prompt length.
    One forward pass for all positions; differentiable through the model (call it under
    ``torch.no_grad()`` for the old or reference policy's log-probabilities).

    Args:
        model: a causal model, ``(B, T)`` token ids to ``(B, T, V)`` logits (see the module).
        sequences: ``(B, P + L)`` prompts followed by completions, integer ids.
        prompt_length: :math:`P \ge 1`.
        mask: ``(B, L)`` bool, valid completion tokens (e.g. :attr:`Completions.mask`).
        temperature: :math:`\tau > 0`, the one the completions were sampled at.
        chunk_size: passed to :func:`token_log_probs`.

    Returns:
        ``(B, L)`` log-probabilities, 0 where ``mask`` is False.
    """
    check_ndim("sequences", check_integer_tensor("sequences", sequences), 2, "(B, P + L)")
    check_positive_int("prompt_length", prompt_length)
    if not prompt_length < sequences.shape[1]:
        raise ValueError(
            f"prompt_length: expected 1 <= prompt_length < {sequences.shape[1]} (the sequences' "
            f"length, so that a completion follows), got {prompt_length}"
        )
    check_positive("temperature", temperature)
    logits = logits_of(model(sequences[:, :-1]))[:, prompt_length - 1 :]
    if temperature != 1.0:
        logits = logits / temperature
    return token_log_probs(logits, sequences[:, prompt_length:], mask, chunk_size)


@dataclass(frozen=True)
class Completions:
    """``k`` sampled completions per prompt; row ``c * k + i`` is sample ``i`` of prompt ``c``."""

    sequences: Tensor
    """``(C k, P + L)`` prompts followed by completions (right-padded after the stop token)."""
    tokens: Tensor
    """``(C k, L)`` the completions: ``sequences[:, P:]``."""
    mask: Tensor
    """``(C k, L)`` bool, the sampled tokens up to and including the stop token."""
    log_probs: Tensor
    """``(C k, L)`` float32 log-probabilities at sampling (temperature applied), 0 where masked:
    the ``old_token_log_probs`` of :func:`logtrick.sequence_surrogate`."""
    stopped: Tensor
    """``(C k,)`` bool, the completion ended with the stop token (not cut at the length limit)."""
    prompt_length: int
    """:math:`P`, the length of the prompts."""

    @property
    def lengths(self) -> Tensor:
        """``(C k,)`` number of tokens of each completion (stop token included)."""
        return self.mask.sum(1)


def _next_tokens(
    logits: Tensor, temperature: float, greedy: bool, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Sample (or argmax) one token per row; return it and its log-probability."""
    bad = logits.isnan() | (logits == float("inf"))
    if bool(bad.any()) or bool((logits == float("-inf")).all(-1).any()):
        raise ValueError(
            "model output: the last position's logits hold NaN or +inf, or a row is all -inf "
            "(-inf alone, a masked vocabulary entry, is allowed)"
        )
    logp = (logits.float() / temperature).log_softmax(-1)
    if greedy:
        token = logp.argmax(-1)
    else:
        token = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
    return token, logp.gather(-1, token[:, None])[:, 0]


@torch.no_grad()
def _check_ids_in_vocab(vocab: int, stop_token: int | None, pad: int) -> None:
    """The stop and pad ids exist in the model's vocabulary (a stop id outside it never comes)."""
    for name, value in (("stop_token", stop_token), ("pad_token", pad)):
        if value is not None and value >= vocab:
            raise ValueError(
                f"{name}: {value} is outside the model's vocabulary [0, {vocab}); a stop token "
                f"there is never sampled, so generation would never stop"
            )


def sample_completions(
    model: nn.Module,
    prompts: Tensor,
    k: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    stop_token: int | None = None,
    pad_token: int | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Completions:
    r"""Draw ``k`` completions of each prompt from a causal ``model``, token by token.

    .. math::  y_t \sim \operatorname{softmax}(z_t / \tau), \qquad t = 1, \dots,
               \min(\text{first } t \text{ with } y_t = \text{stop},\ \text{max\_new\_tokens})

    Each step runs the model on the whole prefix (no key-value cache: any module of logits
    works; for long generations of a large model, generate with its own ``generate`` and score
    the result with :func:`sequence_log_probs`). Stops early once every row has stopped. Runs
    without gradient; put the model in ``eval()`` mode first if it has dropout.

    Args:
        model: a causal model, ``(B, T)`` token ids to ``(B, T, V)`` logits (see the module).
        prompts: ``(C, P)`` integer ids, ``P >= 1``.
        k: completions per prompt.
        max_new_tokens: the length limit :math:`L_{max}`.
        temperature: :math:`\tau > 0`.
        stop_token: id that ends a completion (included in it), or ``None``.
        pad_token: id written after the stop token (default: ``stop_token``, else 0).
        greedy: take the most likely token instead of sampling (``k`` copies are then equal).
        generator: the random number generator, on the model's device.

    Returns:
        :class:`Completions` with ``L <= max_new_tokens`` (the longest completion).
    """
    check_ndim("prompts", check_integer_tensor("prompts", prompts), 2, "(C, P) (prompts, tokens)")
    if prompts.shape[1] < 1:
        raise ValueError(f"prompts: expected shape (C, P) with P >= 1, got {tuple(prompts.shape)}")
    check_positive_int("k", k)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive("temperature", temperature)
    if stop_token is not None:
        check_nonnegative_int("stop_token", stop_token)
    pad = (stop_token if stop_token is not None else 0) if pad_token is None else pad_token
    check_nonnegative_int("pad_token", pad)
    seq = prompts.repeat_interleave(k, 0)
    done = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    masks, log_probs = [], []
    for step in range(max_new_tokens):
        logits = logits_of(model(seq))[:, -1]
        if step == 0:
            _check_ids_in_vocab(logits.shape[-1], stop_token, pad)
        token, logp = _next_tokens(logits, temperature, greedy, generator)
        masks.append(~done)
        log_probs.append(torch.where(done, 0.0, logp))
        seq = torch.cat([seq, torch.where(done, pad, token)[:, None]], 1)
        if stop_token is not None:
            done = done | (token == stop_token)
            if bool(done.all()):
                break
    p = prompts.shape[1]
    mask = torch.stack(masks, 1)
    return Completions(seq, seq[:, p:], mask, torch.stack(log_probs, 1), done, p)
