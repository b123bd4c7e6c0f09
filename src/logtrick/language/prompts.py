"""Prompts and reward functions of the language-model trainer, checked at the boundary.

Prompts are a list (of strings, or of chat conversations: lists of ``{"role", "content"}``
messages, rendered with the tokenizer's chat template) or a ``datasets.Dataset`` with a
``"prompt"`` column; its other columns reach every reward function as keyword arguments, one
value per completion (TRL's convention). A reward function is
``f(prompts, completions, **columns) -> list[float]`` with one finite number per completion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["PromptSet", "RewardFn", "call_rewards", "render_prompt"]

RewardFn = Callable[..., Sequence[float]]


class PromptSet:
    """The prompts and their extra columns, indexable by row."""

    def __init__(self, prompts: object) -> None:
        columns = getattr(prompts, "column_names", None)
        if columns is not None:  # a datasets.Dataset
            if "prompt" not in columns:
                raise ValueError(
                    f"prompts: a Dataset needs a 'prompt' column, got columns {list(columns)}"
                )
            data: Any = prompts
            self.prompts: list[Any] = list(data["prompt"])
            self.columns = {c: list(data[c]) for c in columns if c != "prompt"}
        elif isinstance(prompts, Sequence) and not isinstance(prompts, (str, bytes)):
            self.prompts, self.columns = list(prompts), {}
        else:
            raise TypeError(
                f"prompts: expected a list of strings or chat messages, or a datasets.Dataset, "
                f"got {type(prompts).__name__}"
            )
        if not self.prompts:
            raise ValueError("prompts: expected at least one prompt, got none")
        for i, p in enumerate(self.prompts):
            if not isinstance(p, str) and not _is_chat(p):
                raise TypeError(
                    f"prompts: row {i} is a {type(p).__name__}; expected a string or a list of "
                    f"{{'role': ..., 'content': ...}} messages"
                )

    def __len__(self) -> int:
        return len(self.prompts)

    def rows(self, index: Sequence[int]) -> tuple[list[Any], dict[str, list[Any]]]:
        """The prompts and the columns of rows ``index``."""
        return [self.prompts[i] for i in index], {
            c: [v[i] for i in index] for c, v in self.columns.items()
        }


def _is_chat(p: object) -> bool:
    return isinstance(p, list) and all(isinstance(m, Mapping) and "content" in m for m in p)


def render_prompt(tokenizer: Any, prompt: Any) -> str:
    """The text the model continues: the prompt itself, or a conversation rendered with the
    tokenizer's chat template and the assistant's turn opened (``add_generation_prompt``)."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("tokenizer: chat prompts need a tokenizer with a chat_template")
    return str(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))


def call_rewards(
    funcs: Sequence[RewardFn],
    weights: Sequence[float],
    prompts: list[Any],
    completions: list[str],
    columns: Mapping[str, list[Any]],
) -> tuple[list[float], dict[str, list[float]]]:
    """The weighted sum of the reward functions per completion, and each function's values."""
    per_fn: dict[str, list[float]] = {}
    total = [0.0] * len(completions)
    for fn, w in zip(funcs, weights):
        name = reward_name(fn)
        values = list(fn(prompts, completions, **columns))
        if len(values) != len(completions):
            raise ValueError(
                f"rewards: {name} returned {len(values)} values for {len(completions)} completions"
            )
        bad = [v for v in values if not isinstance(v, (int, float)) or not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"rewards: {name} returned a non-finite or non-number value {bad[0]!r}"
            )
        per_fn[name] = [float(v) for v in values]
        total = [t + w * float(v) for t, v in zip(total, values)]
    return total, per_fn


def reward_name(fn: object) -> str:
    """A reward function's name in the metrics (``reward/<name>``)."""
    return str(getattr(fn, "__name__", type(fn).__name__))


def check_rewards(rewards: object, weights: object) -> tuple[list[RewardFn], list[float]]:
    """Reward functions as a list and their weights (default 1 each), checked."""
    funcs = [rewards] if callable(rewards) else list(rewards)  # type: ignore[call-overload]
    if not funcs or not all(callable(f) for f in funcs):
        raise TypeError(
            f"rewards: expected a function f(prompts, completions, **columns) -> list[float] or "
            f"a list of them, got {rewards!r}"
        )
    ws = [1.0] * len(funcs) if weights is None else [float(w) for w in weights]  # type: ignore[attr-defined]
    if len(ws) != len(funcs) or not all(math.isfinite(w) for w in ws):
        raise ValueError(
            f"reward_weights: expected {len(funcs)} finite numbers (one per reward function), "
            f"got {weights!r}"
        )
    names = [reward_name(f) for f in funcs]
    if len(set(names)) != len(names):
        raise ValueError(f"rewards: the functions need distinct names, got {names}")
    return funcs, ws
