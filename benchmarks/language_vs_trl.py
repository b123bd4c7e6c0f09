"""logtrick's language-model trainer against TRL's ``GRPOTrainer`` on the same model and task.

The task, model and warm start are ``examples/llm_grpo.py``'s one-digit addition (a
``transformers`` Qwen2 from a config, random weights, the character tokenizer), saved once per
seed and loaded fresh by each run. Both trainers generate with Hugging Face ``generate`` and use
the same settings: 16 prompts x 8 completions per step, 2 epochs x 2 minibatches (TRL:
``num_iterations=2``, ``steps_per_generation=2``), clip 0.2, lr 1e-4, beta 0, temperature 1,
``max_new_tokens`` 8, dropout off. Each run is its own process on one thread; reported: process
CPU seconds per 1,000 completions, split into generation (sampling, the old log-probabilities,
rewards) and update, peak resident memory, and greedy accuracy on 100 held-out problems after
the run (the same evaluation for both).

    python benchmarks/language_vs_trl.py [--steps 30] [--seeds 0 1 2] [--algos grpo dr_grpo]
    python benchmarks/language_vs_trl.py --memory      # chunked vs whole-logits scoring, peak RSS

Needs ``trl==1.16.0`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/logtrick_language_vs_trl")
C, K, STEPS = 16, 8, 30


def task() -> Any:
    spec = importlib.util.spec_from_file_location("llm_grpo_task", ROOT / "examples/llm_grpo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["llm_grpo_task"] = module
    spec.loader.exec_module(module)
    return module


def accuracy(model: Any, t: Any) -> float:
    import logtrick as lt

    test = t.problems(100, 1, 12345)
    probe = lt.language.Trainer(
        model,
        t.TOK,
        test,
        t.correct,
        checker=t.correct,
        config=lt.language.LMConfig(max_new_tokens=8, progress=False),
    )
    return probe.evaluate(test)


def run_logtrick(model: Any, t: Any, algo: str, seed: int, steps: int) -> dict[str, float]:
    import logtrick as lt
    from logtrick.language import trainer as trainer_module

    cfg = lt.language.LMConfig(
        algo=algo,
        k=K,
        prompts_per_step=C,
        max_new_tokens=8,
        lr=1e-4,
        epochs=2,
        minibatches=2,
        clip_eps=0.2,
        seed=seed,
        progress=False,
    )
    gen = [0.0]
    real = trainer_module.Trainer._generate

    def timed(self: Any, *a: Any, **kw: Any) -> Any:
        t0 = time.process_time()
        out = real(self, *a, **kw)
        gen[0] += time.process_time() - t0
        return out

    trainer_module.Trainer._generate = timed  # type: ignore[method-assign]
    tr = lt.language.Trainer(model, t.TOK, t.problems(5000, 1, seed + 1), t.correct, config=cfg)
    t0 = time.process_time()
    tr.learn(steps)
    total = time.process_time() - t0
    return {"total": total, "generate": gen[0]}


def run_trl(model: Any, t: Any, algo: str, seed: int, steps: int) -> dict[str, float]:
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    prompts = t.problems(5000, 1, seed + 1)
    data = datasets.Dataset.from_dict({"prompt": prompts})
    cfg = GRPOConfig(
        output_dir=str(WORK / "trl_out"),
        use_cpu=True,
        seed=seed,
        learning_rate=1e-4,
        per_device_train_batch_size=C * K // 2,
        gradient_accumulation_steps=1,
        steps_per_generation=2,
        num_iterations=2,
        num_generations=K,
        epsilon=0.2,
        beta=0.0,
        loss_type=algo,
        max_completion_length=8,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_steps=2 * steps * 2,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        disable_dropout=True,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        weight_decay=0.0,
        bf16=False,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=t.correct, args=cfg, train_dataset=data, processing_class=t.TOK
    )
    gen = [0.0]
    real = trainer._generate_and_score_completions

    def timed(*a: Any, **kw: Any) -> Any:
        t0 = time.process_time()
        out = real(*a, **kw)
        gen[0] += time.process_time() - t0
        return out

    trainer._generate_and_score_completions = timed  # type: ignore[method-assign]
    t0 = time.process_time()
    trainer.train()
    return {"total": time.process_time() - t0, "generate": gen[0]}


def child(lib: str, algo: str, seed: int, steps: int) -> None:
    """One run in this process; prints a JSON line."""
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    t = task()
    model = AutoModelForCausalLM.from_pretrained(WORK / f"warm{seed}")
    out = (run_logtrick if lib == "logtrick" else run_trl)(model, t, algo, seed, steps)
    out["accuracy"] = accuracy(model.eval(), t)
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["completions"] = steps * C * K
    print("RESULT " + json.dumps(out), flush=True)


def warm(seed: int) -> None:
    torch.set_num_threads(1)
    t = task()
    s = t.Settings(digits=1, warm_max_steps=600)
    model = t.warm_start(s, seed, t.problems(100, 1, 12345))
    model.save_pretrained(WORK / f"warm{seed}")


def _spawn(*args: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(lines[-1][7:])


def compare(seeds: list[int], algos: list[str], steps: int) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    for seed in seeds:
        if not (WORK / f"warm{seed}").exists():
            subprocess.run([sys.executable, __file__, "--warm", str(seed)], check=True)
        for algo in algos:
            for lib in ("logtrick", "trl"):  # interleaved: load changes hit both alike
                r = _spawn("--child", lib, algo, str(seed), str(steps))
                rows.setdefault((algo, lib), []).append(r)
                print(f"seed {seed} {algo:<8} {lib:<9} {json.dumps(r)}", flush=True)
    print(
        f"\n{'algo':<8} {'library':<9} {'CPU s/1k total':>15} {'generate':>9} {'update':>7} "
        f"{'peak MiB':>9} {'accuracy (per seed)':>24}"
    )
    for (algo, lib), rs in rows.items():
        per_k = lambda key, rs=rs: statistics.median(  # noqa: E731
            r[key] / r["completions"] * 1000 for r in rs
        )
        upd = statistics.median((r["total"] - r["generate"]) / r["completions"] * 1000 for r in rs)
        accs = " / ".join(f"{r['accuracy']:.2f}" for r in rs)
        print(
            f"{algo:<8} {lib:<9} {per_k('total'):>15.2f} {per_k('generate'):>9.2f} {upd:>7.2f} "
            f"{statistics.median(r['peak_mib'] for r in rs):>9.0f} {accs:>24}"
        )


def memory_child(mode: str, length: int) -> None:
    """Peak RSS of one forward+backward of completion log-probs, chunked or whole."""
    torch.set_num_threads(1)
    import logtrick as lt

    model = lt.language.tiny_causal_lm(8192, "qwen2", hidden=64, layers=1)
    seq = torch.randint(0, 8192, (16, 8 + length))
    if mode == "chunked":
        lp = lt.sequence_log_probs(model, seq, 8, chunk_size=16)
    else:  # the whole (B, T, V) logits, then the log-softmax
        z = model(seq[:, :-1]).logits[:, 7:]
        lp = z.log_softmax(-1).gather(-1, seq[:, 8:, None])[..., 0]
    lp.sum().backward()
    print(
        "RESULT "
        + json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    )


def memory() -> None:
    print(f"{'completion length':>17} {'chunked MiB':>12} {'whole logits MiB':>17}  (B=16, V=8192)")
    for length in (256, 1024):
        ch = _spawn("--memory-child", "chunked", str(length))["peak_mib"]
        wh = _spawn("--memory-child", "whole", str(length))["peak_mib"]
        print(f"{length:>17} {ch:>12.0f} {wh:>17.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1:2] == ["--warm"]:
        warm(int(sys.argv[2]))
    elif sys.argv[1:2] == ["--memory-child"]:
        memory_child(sys.argv[2], int(sys.argv[3]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--steps", type=int, default=STEPS)
        parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
        parser.add_argument("--algos", nargs="*", default=["grpo", "dr_grpo"])
        parser.add_argument("--memory", action="store_true")
        args = parser.parse_args()
        memory() if args.memory else compare(args.seeds, args.algos, args.steps)
