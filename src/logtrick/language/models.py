"""What the language tools need to know about a model: Hugging Face or plain, PEFT or not.

Nothing here imports ``transformers`` or ``peft``: a model is recognised by what it has
(``generate`` and ``config``; ``disable_adapter`` and ``get_base_model``), so ``import logtrick``
stays fast and a plain ``nn.Module`` of logits works everywhere a causal LM does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["is_hf_model", "is_peft_model", "position_ids", "reference_policy", "split_head"]


def is_peft_model(model: nn.Module) -> bool:
    """A ``peft.PeftModel``: it can switch its adapter off (``disable_adapter``)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def is_hf_model(model: nn.Module) -> bool:
    """A ``transformers`` causal LM (or a PEFT model around one): it has ``generate``."""
    return callable(getattr(model, "generate", None)) and hasattr(model, "config")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.get_base_model() if is_peft_model(model) else model  # type: ignore[operator]


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(backbone, lm_head)`` of a ``transformers`` causal LM whose logits are
    ``lm_head(backbone(...).last_hidden_state)``, or ``None`` (plain modules; models that scale
    or soft-cap their logits). With the head apart, only completion positions are projected
    onto the vocabulary, a chunk at a time. The modules are the model's own (a LoRA inside
    them stays active, and ``disable_adapter`` switches it off)."""
    if not is_hf_model(model):
        return None
    inner = _unwrap(model)
    config = inner.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    prefix = getattr(inner, "base_model_prefix", "")
    backbone = getattr(inner, prefix, None) if prefix else None
    get_head = getattr(inner, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(backbone, nn.Module) or not isinstance(head, nn.Module):
        return None
    return backbone, head


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding, as ``generate`` numbers them: 0 at the first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def forward_kwargs(model: nn.Module, attention_mask: Tensor | None) -> dict[str, Any]:
    """Keyword arguments beside the token ids: the mask and positions for a ``transformers``
    model given a mask, nothing for a plain module (it must not need padding)."""
    if attention_mask is None or not is_hf_model(model):
        return {}
    return {"attention_mask": attention_mask, "position_ids": position_ids(attention_mask)}


@contextlib.contextmanager
def reference_policy(model: nn.Module, ref_model: nn.Module | None) -> Iterator[nn.Module]:
    """The reference policy for a KL penalty, without gradients: ``ref_model`` when given, else
    ``model`` with its PEFT adapter disabled (the same weights; no second copy)."""
    with torch.no_grad():
        if ref_model is not None:
            yield ref_model
        elif is_peft_model(model):
            with model.disable_adapter():  # type: ignore[operator]
                yield model
        else:
            raise ValueError(
                "ref_model: a KL penalty needs a reference: pass ref_model, or a PEFT model "
                "(the reference is then the model with its adapter disabled)"
            )
