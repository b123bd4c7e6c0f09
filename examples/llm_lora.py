r"""LoRA: RL fine-tuning of a frozen GPT-2-architecture model through a low-rank adapter.

The base model is a ``transformers`` GPT-2 built from a config with random weights (no
download), taught by maximum likelihood the task of ``llm_grpo.py``: one-digit sums written
least-significant digit first, where the teacher zero-pads 95 % of its answers, so the base
model's greedy answers are almost never canonical. The base is then frozen and a LoRA adapter
(``peft``, rank 8 on the attention projections) is trained by GRPO with the 0/1 checker and a KL
penalty to the reference, which is the same model with its adapter switched off (no second
copy of the weights):

.. code-block:: python

    model = peft.get_peft_model(base, peft.LoraConfig(r=8, lora_alpha=16,
                                                       target_modules=["c_attn", "c_proj"]))
    trainer = lt.language.Trainer(model, tokenizer, prompts, correct, algo="grpo",
                                  checker=correct, config=lt.language.LMConfig(
                                      k=8, prompts_per_step=8, lr=2e-3, kl_coef=0.02))
    trainer.learn(100)
    trainer.evaluate(test_prompts)

Run:  python examples/llm_lora.py           (100 steps)
      python examples/llm_lora.py --quick   (30 steps)

Measured (seed 0, 2-core CPU shared with other jobs): see the printed table; the figures are in
``BENCHMARKS.md`` (Issue 27).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

import logtrick as lt


def _task() -> object:
    """``llm_grpo.py``'s task (problems, checker, warm start), loaded from its path."""
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path("examples")
    spec = importlib.util.spec_from_file_location("llm_grpo_task", here / "llm_grpo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["llm_grpo_task"] = module
    spec.loader.exec_module(module)
    return module


def main(quick: bool = False, seed: int = 0) -> dict:
    import peft

    torch.set_num_threads(1)
    task: object = _task()
    t = task  # type: ignore[assignment]
    s = t.Settings(digits=1, arch="gpt2", warm_max_steps=600)  # type: ignore[attr-defined]
    test = t.problems(100 if quick else 300, 1, 12345)  # type: ignore[attr-defined]
    base = t.warm_start(s, seed, test)  # type: ignore[attr-defined]
    lora = peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True
    )
    model = peft.get_peft_model(base, lora)
    cfg = lt.language.LMConfig(
        k=8,
        prompts_per_step=8,
        max_new_tokens=s.max_new,
        lr=2e-3,
        kl_coef=0.02,
        seed=seed,
        progress=False,
    )
    prompts = t.problems(2000, 1, seed + 1)  # type: ignore[attr-defined]
    trainer = lt.language.Trainer(
        model,
        t.TOK,
        prompts,
        t.correct,
        "grpo",
        cfg,  # type: ignore[attr-defined]
        checker=t.correct,
    )  # type: ignore[attr-defined]
    before = trainer.evaluate(test)
    begin = time.perf_counter()
    rows = [trainer.learn(1) for _ in range(30 if quick else 100)]
    after = trainer.evaluate(test)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(
        f"LoRA ({trainable:,} of {total:,} parameters train): greedy accuracy {before:.3f} -> "
        f"{after:.3f} in {time.perf_counter() - begin:.0f} s; KL to the base "
        f"{rows[-1]['kl']:.4f}"
    )
    return {"before": before, "after": after, "trainable": trainable, "total": total}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.quick, args.seed)
