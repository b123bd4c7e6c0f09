r"""Log-probabilities of completion tokens under a causal LM, without the ``(B, T, V)`` logits.

.. math::  \log\pi(y_t \mid x, y_{<t}) = \log\operatorname{softmax}(W h_{P+t-1} / \tau)[y_t]

A ``transformers`` causal LM is split into its backbone and its head :math:`W`
(:func:`logtrick.language.models.split_head`): the backbone runs once on prompt + completion,
the hidden states of the prompt are dropped, and the completion positions are projected onto
the vocabulary a chunk at a time. Under autograd each chunk is checkpointed, so the backward
recomputes its logits instead of keeping them: the peak holds one chunk of logits, not
:math:`B \times L \times V` (measured in ``benchmarks/language_vs_trl.py --memory``). A plain
module of logits is run whole and its prompt positions sliced off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from logtrick.checks import (
    check_bool_tensor,
    check_integer_tensor,
    check_ndim,
    check_positive,
    check_positive_int,
)
from logtrick.language.models import forward_kwargs, is_hf_model, split_head
from logtrick.language.tokens import CHUNK_ELEMENTS, logits_of, token_log_probs

__all__ = ["Scores", "score_completions", "sequence_log_probs"]


@dataclass(frozen=True)
class Scores:
    """What one forward pass over prompt + completion gives, per completion token."""

    log_probs: Tensor
    """``(B, L)`` float32 :math:`\\log\\pi(y_t)` at temperature :math:`\\tau`, 0 where masked."""
    entropy: Tensor | None
    """``(B, L)`` entropy of :math:`\\operatorname{softmax}(z_t/\\tau)`, 0 where masked; or None."""
    hidden: Tensor | None
    """``(B, L, H)`` the backbone's last hidden state before each token (a value head's input)."""


def _head_chunk(
    h: Tensor, head: nn.Module, tokens: Tensor, valid: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    z = head(h).float() / temperature
    logp = z.log_softmax(-1)
    ent = -(logp.exp() * logp).sum(-1)
    return token_log_probs(z, tokens, valid), torch.where(valid, ent, 0.0)


def _chunked_head(
    h: Tensor, head: nn.Module, tokens: Tensor, valid: Tensor, temperature: float, chunk: int
) -> tuple[Tensor, Tensor]:
    """``_head_chunk`` over ``chunk`` positions at a time, checkpointed under autograd."""
    lps, ents = [], []
    several = h.shape[1] > chunk  # one chunk: nothing to save by recomputing it
    for i in range(0, h.shape[1], chunk):
        part = (h[:, i : i + chunk], head, tokens[:, i : i + chunk], valid[:, i : i + chunk])
        if several and torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_head_chunk, *part, temperature, use_reentrant=False)
        else:
            lp, ent = _head_chunk(*part, temperature)
        lps.append(lp)
        ents.append(ent)
    return torch.cat(lps, 1), torch.cat(ents, 1)


def _check(sequences: Tensor, prompt_length: int, mask: Tensor | None, am: Tensor | None) -> None:
    check_ndim("sequences", check_integer_tensor("sequences", sequences), 2, "(B, P + L)")
    check_positive_int("prompt_length", prompt_length)
    if not prompt_length < sequences.shape[1]:
        raise ValueError(
            f"prompt_length: expected 1 <= prompt_length < {sequences.shape[1]} (the sequences' "
            f"length, so that a completion follows), got {prompt_length}"
        )
    b, length = sequences.shape
    if mask is not None:
        check_bool_tensor("mask", mask, (b, length - prompt_length))
    if am is not None:
        check_bool_tensor("attention_mask", am, (b, length))


def score_completions(
    model: nn.Module,
    sequences: Tensor,
    prompt_length: int,
    mask: Tensor | None = None,
    attention_mask: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    hidden: bool = False,
    entropy: bool = False,
) -> Scores:
    """Log-probabilities, entropies (and hidden states) of the completions in ``sequences``.

    Args:
        model: a ``transformers`` causal LM (PEFT included) or a module of logits.
        sequences: ``(B, P + L)`` prompts (left-padded) followed by completions.
        prompt_length: :math:`P`.
        mask: ``(B, L)`` bool, valid completion tokens; ``None`` for all.
        attention_mask: ``(B, P + L)`` bool, ``False`` on padding (``transformers`` models).
        temperature: :math:`\\tau > 0`, the one the completions were sampled at.
        chunk_size: completion positions per chunk of logits; default: as many as hold
            :data:`logtrick.language.tokens.CHUNK_ELEMENTS` logits.
        hidden: also return the hidden states (for a value head; ``transformers`` models).
        entropy: also return the per-token entropies.

    Returns:
        :class:`Scores`; differentiable through the model unless run under ``no_grad``.
    """
    _check(sequences, prompt_length, mask, attention_mask)
    check_positive("temperature", temperature)
    tokens = sequences[:, prompt_length:]
    b, length = tokens.shape
    valid = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
    kwargs = forward_kwargs(model, None if attention_mask is None else attention_mask[:, :-1])
    split = split_head(model)
    if split is None:
        if hidden:
            raise ValueError("hidden: needs a transformers causal LM (a backbone and a head)")
        if is_hf_model(model):
            kwargs["logits_to_keep"] = length
        z = logits_of(model(sequences[:, :-1], **kwargs))[:, -length:]
        z = z / temperature if temperature != 1.0 else z
        ent = None
        if entropy:
            logp = z.float().log_softmax(-1)
            ent = torch.where(valid, -(logp.exp() * logp).sum(-1), 0.0)
        return Scores(token_log_probs(z, tokens, valid, chunk_size), ent, None)
    backbone, head = split
    out = backbone(input_ids=sequences[:, :-1], **kwargs)
    h = out.last_hidden_state[:, prompt_length - 1 :]
    vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])  # type: ignore[index]
    chunk = max(CHUNK_ELEMENTS // max(b * vocab, 1), 1) if chunk_size is None else chunk_size
    check_positive_int("chunk_size", chunk)
    lp, ent = _chunked_head(h, head, tokens, valid, temperature, chunk)
    return Scores(lp, ent if entropy else None, h if hidden else None)


def sequence_log_probs(
    model: nn.Module,
    sequences: Tensor,
    prompt_length: int,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    r"""Token log-probabilities of the completions in ``sequences`` under a causal ``model``.

    .. math::  \log\pi(y_t \mid x, y_{<t}) = \log\operatorname{softmax}(z_{P+t-1} / \tau)[y_t]

    with :math:`z` the logits of ``model(sequences[:, :-1])`` and :math:`P` the prompt length,
    computed for the completion positions only (see the module). One forward pass;
    differentiable through the model (call it under ``torch.no_grad()`` for the old or
    reference policy's log-probabilities).

    Args:
        model: a ``transformers`` causal LM or a module of ``(B, T)`` ids to ``(B, T, V)`` logits.
        sequences: ``(B, P + L)`` prompts followed by completions, integer ids.
        prompt_length: :math:`P \ge 1`.
        mask: ``(B, L)`` bool, valid completion tokens (e.g. :attr:`Completions.mask`).
        temperature: :math:`\tau > 0`, the one the completions were sampled at.
        chunk_size: completion positions per chunk of logits (see :func:`score_completions`).
        attention_mask: ``(B, P + L)`` bool for left-padded prompts (``transformers`` models).

    Returns:
        ``(B, L)`` log-probabilities, 0 where ``mask`` is False.
    """
    scores = score_completions(
        model, sequences, prompt_length, mask, attention_mask, temperature, chunk_size
    )
    return scores.log_probs
