"""Function vectors (Todd et al. 2024) in SmolLM2-135M-Instruct.

    .venv/bin/python examples/function_vectors.py      # JAXINTERP_QUICK=1: a small, fast run

1. For two built-in tasks, clean ICL prompts (``Q: x\\nA: y`` demonstrations) and their
   shuffled-label twins; every head's mean last-position ``attn.z`` over the clean ones.
2. The causal indirect effect of every (layer, head) on the shuffled prompts, in one
   compiled vmapped program per task, averaged over the two tasks (Todd et al. average
   over tasks to find the heads that carry function vectors); the top-k heads.
3. Per task: the function vector = the top heads' mean outputs (through W_O), added at
   one layer to zero-shot prompts ``Q: x\\nA:``; first-token accuracy with and without it,
   at every layer in one call.
"""

from __future__ import annotations

import os
import time

import numpy as np

import jaxinterp as ji
from jaxinterp.editing.function_vectors import (
    accuracy_by_layer,
    causal_indirect_effect,
    encode_prompts,
    first_token_accuracy,
    function_vector,
    mean_head_outputs,
    top_heads,
)
from jaxinterp.editing.icl_tasks import (
    TASKS,
    ICLTask,
    icl_prompt,
    sample_prompts,
    zero_shot_prompt,
)
from jaxinterp.loading.bundled import smollm2_path

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
TASK_NAMES = ["antonym", "english_french_number", "country_capital"][: 1 if QUICK else 3]  # QUICK: each length compiles anew
N_CIE_PROMPTS = 1 if QUICK else 2  # shuffled prompts per task for the head sweep
N_MEAN_PROMPTS = 4 if QUICK else 16  # clean prompts per task for the mean head outputs
N_SHOTS = 5
TOP_K = 10


def main():
    t0 = time.time()
    path = smollm2_path()
    model, tok = ji.load(path, n_layers=12 if QUICK else None), ji.load_tokenizer(path)  # QUICK: every code path, on the first layers
    cfg = model.cfg
    cie_layers = list(range(0, cfg.n_layers, 10)) if QUICK else list(range(cfg.n_layers))
    data = {}
    cies = []
    for name in TASK_NAMES:
        task = TASKS[name]
        # Hold the last third of the pairs out for zero-shot evaluation.
        n_eval = len(task.pairs) // 3
        train = ICLTask(name, task.pairs[:-n_eval])
        evals = task.pairs[-n_eval:]
        clean, shuffled, answers = sample_prompts(train, N_MEAN_PROMPTS, N_SHOTS, seed=0)
        clean_p = encode_prompts(tok, clean, answers)
        mean_z = mean_head_outputs(model, clean_p)
        shuf_p = encode_prompts(tok, shuffled[:N_CIE_PROMPTS], answers[:N_CIE_PROMPTS])
        t1 = time.time()
        cie = causal_indirect_effect(model, shuf_p, mean_z, layers=cie_layers)
        print(
            f"{name}: CIE of {len(cie_layers) * cfg.n_heads} heads x {N_CIE_PROMPTS} prompts in one program, {time.time() - t1:.0f} s"
        )
        cies.append(cie)
        zs = encode_prompts(tok, [zero_shot_prompt(x) for x, _ in evals], [" " + y for _, y in evals])
        rng = np.random.default_rng(1)
        demos = [[train.pairs[j] for j in rng.choice(len(train.pairs), N_SHOTS, replace=False)] for _ in evals]
        icl = encode_prompts(tok, [icl_prompt(d, x) for d, (x, _) in zip(demos, evals)], [" " + y for _, y in evals])
        data[name] = (mean_z, zs, icl, len(evals))

    cie = np.stack(cies).mean(0)  # unswept layers stay NaN
    heads = top_heads(cie, TOP_K)
    print(f"\ntop {TOP_K} heads by CIE averaged over tasks (layer, head: CIE):")
    print("  " + ", ".join(f"L{l}H{h}: {cie[l, h]:+.4f}" for l, h in heads))

    fv_layer = cfg.n_layers // 3
    print(f"\n| task | n | zero-shot | zero-shot + FV at layer {fv_layer} | + FV, best layer | {N_SHOTS}-shot ICL |")
    print("|---|---|---|---|---|---|")
    for name in TASK_NAMES:
        mean_z, zs, icl, n = data[name]
        fv = function_vector(model, mean_z, heads)
        base = first_token_accuracy(model, zs)
        by_layer = accuracy_by_layer(model, zs, fv)
        best = int(np.argmax(by_layer))
        print(
            f"| {name} | {n} | {base:.2f} | {by_layer[fv_layer]:.2f} | {by_layer[best]:.2f} (layer {best}) | {first_token_accuracy(model, icl):.2f} |"
        )
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
