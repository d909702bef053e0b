"""ROME causal tracing on SmolLM2-135M: where is "The Eiffel Tower -> Paris" recalled?

    .venv/bin/python examples/causal_tracing.py [path/to/model.gguf | hf_dir] [--samples N]

Noise (3x the embeddings' std) on the subject tokens "The Eiffel Tower"; then, one at
a time, the clean hidden state (``resid_post``) of each layer x position, or the clean
MLP / attention outputs of a 10-layer window, is restored, and the probability of
" Paris" after "...is located in the city of" is averaged over noise samples.

Prints the clean / corrupted probabilities, where each map peaks, and the average
indirect effect at ROME's token groups (first / middle / last subject token, first
subsequent token, further tokens, last token). Writes ``out/causal_tracing.png``
(ROME's figure: hidden, MLP, attention). Runs on the fast patching engine
(``method="fast"``: only the layers and positions a restoration can change, every noise
sample in one program; ``benchmarks/causal_tracing.py`` compares it with the full-forward
path). Then traces four facts together with `causal_trace_dataset` (MLP windows; not in
the quick mode). Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import jaxinterp
from jaxinterp.causal.causal_tracing import causal_trace, causal_trace_dataset
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.loading.tokenizer import load_tokenizer

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, small budgets

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"
ANSWER = " Paris"
# A small dataset of facts (prompt, subject) for causal_trace_dataset; each answer is the
# clean run's top token (as ROME).
FACTS = [
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower"),
    ("The Colosseum is located in the city of", "The Colosseum"),
    ("The Space Needle is located in the city of", "The Space Needle"),
    ("Big Ben is located in the city of", "Big Ben"),
]


def token_groups(n_pos: int, subject: list[int]) -> dict[str, list[int]]:
    """ROME's rows of the averaged figure: subject tokens, the token after, the rest, the last."""
    first, last = subject[0], subject[-1]
    groups = {
        "first subject token": [first],
        "middle subject tokens": subject[1:-1],
        "last subject token": [last],
        "first subsequent token": [last + 1],
        "further tokens": list(range(last + 2, n_pos - 1)),
        "last token": [n_pos - 1],
    }
    return {k: v for k, v in groups.items() if v}


def main(path: str, n_samples: int) -> None:
    model, tok = jaxinterp.load(path, n_layers=4 if QUICK else None), load_tokenizer(path)
    n_samples = 1 if QUICK else n_samples
    tokens = tok.to_tokens(PROMPT)
    str_tokens = tok.to_str_tokens(tokens)
    n_subject = len(tok.to_tokens(SUBJECT))
    assert "".join(str_tokens[:n_subject]) == SUBJECT, (str_tokens, SUBJECT)
    subject = list(range(n_subject))
    answer = tok.to_single_token(ANSWER)
    probs = jax.nn.softmax(model(tokens)[-1])
    print(f"tokens: {str_tokens}; subject = positions {subject}")
    print(
        "top-5 next tokens:",
        [(tok.decode([int(i)]), round(float(probs[i]), 3)) for i in np.argsort(-np.asarray(probs))[:5]],
    )

    t = time.perf_counter()
    trace = causal_trace(
        model,
        tokens,
        subject,
        answer=answer,
        n_samples=n_samples,
        pos_labels=str_tokens,
        answer_label=ANSWER,
        method="fast",
    )
    print(
        f"\ncausal trace, {model.cfg.n_layers} layers x {len(str_tokens)} positions x 3 kinds x {n_samples} samples: "
        f"{time.perf_counter() - t:.0f} s"
    )
    print(
        f"p({ANSWER!r}): clean {trace.clean_prob:.4f}, corrupted {trace.corrupted_prob:.4f} (noise std {trace.noise_std:.4f})"
    )
    for kind in ("hidden", "mlp", "attn"):
        ie = trace.indirect_effect(kind)
        peak = ie.argmax()
        print(
            f"  {kind:6s}: max indirect effect {float(np.max(ie.values)):+.4f} at layer {peak['layer']}, "
            f"token {str_tokens[peak['pos']]!r}"
        )
    print("\nindirect effect by token group, averaged over layers (early half | late half):")
    half = model.cfg.n_layers // 2
    for name, idx in token_groups(len(str_tokens), subject).items():
        row = "  ".join(
            f"{kind} {trace.indirect_effect(kind).values[:half, idx].mean():+.4f}|{trace.indirect_effect(kind).values[half:, idx].mean():+.4f}"
            for kind in ("hidden", "mlp", "attn")
        )
        print(f"  {name:24s} {row}")

    print("\np(answer) by layer at each subject token and the last token (hidden | mlp | attn):")
    for p in subject + [len(str_tokens) - 1]:
        for kind in ("hidden", "mlp", "attn"):
            row = " ".join(f"{v:.2f}" for v in getattr(trace, kind).values[:, p])
            print(f"  {str_tokens[p]!r:>9} {kind:6s} {row}")

    os.makedirs("out", exist_ok=True)
    trace.plot("out/causal_tracing.png")
    np.savez(
        "out/causal_tracing.npz",
        tokens=np.asarray(str_tokens),
        hidden=trace.hidden.values,
        mlp=trace.mlp.values,
        attn=trace.attn.values,
        clean=trace.clean_prob,
        corrupted=trace.corrupted_prob,
    )
    print("wrote out/causal_tracing.png, out/causal_tracing.npz")
    if not QUICK:  # the quick mode's budget (CI) is spent on the trace above
        trace_facts(model, tok, n_samples)


def trace_facts(model, tok, n_samples: int) -> None:
    """The MLP map of several facts in one call (padded to one length, one program per
    prompt length): each fact's strongest MLP window at its last subject token, and the
    indirect effect there averaged over the facts."""
    facts = FACTS
    prompts = [[int(t) for t in tok.to_tokens(prompt)] for prompt, _ in facts]
    n_pos = max(map(len, prompts))
    tokens = np.array([p + [0] * (n_pos - len(p)) for p in prompts])
    mask = np.array([[1] * len(p) + [0] * (n_pos - len(p)) for p in prompts])
    subjects = [list(range(len(tok.to_tokens(subject)))) for _, subject in facts]
    t = time.perf_counter()
    traces = causal_trace_dataset(
        model, tokens, subjects, attention_mask=mask, n_samples=n_samples, kinds=("mlp",), method="fast"
    )
    print(f"\n{len(facts)} facts traced together (MLP windows only): {time.perf_counter() - t:.0f} s")
    last_subject = []
    for (prompt, _), subject, trace in zip(facts, subjects, traces.traces):
        ie = trace.indirect_effect("mlp").values[:, subject[-1]]
        last_subject.append(ie)
        print(
            f"  {prompt!r} -> {tok.decode([trace.answer])!r}: clean {trace.clean_prob:.3f}, corrupted "
            f"{trace.corrupted_prob:.3f}; at the last subject token the largest MLP effect {ie.max():+.3f} "
            f"(window around layer {int(ie.argmax())})"
        )
    mean = np.mean(last_subject, axis=0)
    print("  mean MLP indirect effect at the last subject token, by layer:", " ".join(f"{v:+.2f}" for v in mean))


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    jax.config.update("jax_default_matmul_precision", "highest")
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--samples", type=int, default=10, help="noise samples per cell (ROME: 10)")
    args = parser.parse_args()
    main(args.model or smollm2_path(), args.samples)
