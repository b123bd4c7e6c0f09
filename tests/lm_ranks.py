"""Run by ``tests/test_lm_distributed.py`` under ``torchrun --nproc-per-node 2`` (gloo): each
rank trains the LM trainer on its half of every step's prompts and writes its parameters and
metrics to ``OUT/{algo}-rank{r}.pt``. Also imported by the test for the shared setup.

Generation is made a function of the prompt and the step (:func:`fixed_generate`), so the two
ranks and the one process that sees all prompts draw the same completions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import MethodType
from typing import Any

import torch

from logtrick.language import LMConfig, Trainer, char_tokenizer, tiny_causal_lm
from logtrick.language.tokens import Completions

TOK = char_tokenizer("0123456789")
CASES = {"grpo": {}, "dapo": {}, "reinforce_pp": {"loss_type": "token_mean"}}
_generate = Trainer._generate


def fixed_generate(self: Trainer, prompts: list[Any], k: int, greedy: bool = False) -> Completions:
    """Each prompt's completions drawn under a seed of (prompt, step), then stacked."""
    parts = []
    for p in prompts:
        torch.manual_seed(1000 * self.step + int(p))
        parts.append(_generate(self, [p], k, greedy))
    cat = lambda name: torch.cat([getattr(c, name) for c in parts])  # noqa: E731
    return Completions(
        cat("sequences"),
        cat("tokens"),
        cat("mask"),
        cat("log_probs"),
        cat("stopped"),
        parts[0].prompt_length,
        cat("attention_mask"),
    )


def echo(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    return [float(c[:1] == p) + 0.1 * len(c) for p, c in zip(prompts, completions)]


def trainer(algo: str, run_dir: Path | None) -> Trainer:
    torch.set_num_threads(1)
    cfg = LMConfig(
        algo=algo,
        k=4,
        prompts_per_step=4,
        max_new_tokens=4,
        epochs=2,
        lr=3e-3,
        progress=False,
        tensorboard=False,
        **CASES[algo],
    )
    model = tiny_causal_lm(len(TOK), "qwen2", hidden=32, layers=1, seed=0)
    t = Trainer(model, TOK, [str(d) for d in range(10)], echo, config=cfg, run_dir=run_dir)
    t._generate = MethodType(fixed_generate, t)  # type: ignore[method-assign]  (this trainer only)
    return t


def main(out: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    for algo in CASES:
        t = trainer(algo, out / algo)
        rows = [t.learn(1) for _ in range(2)]
        params = {k: v.detach() for k, v in t.model.named_parameters()}
        torch.save({"params": params, "rows": rows}, out / f"{algo}-rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
