"""Toy transformers on Shakespeare: a 0-layer model is a bigram table, a 1-layer
attention-only model is a set of skip-trigrams (Elhage et al. 2021).

    .venv/bin/python examples/toy_transformers.py            # ~2-4 min on 2 CPU cores
    JAXINTERP_QUICK=1 .venv/bin/python examples/toy_transformers.py   # < 30 s

1. ``bigram-0l`` (shipped; embed -> LayerNorm -> unembed, d_model 64, 1024 BPE tokens):
   the frequency-weighted KL between its next-token distribution and the empirical bigram
   distribution of its training text, next to the bigram conditional entropy; then three
   more seeds trained at once (one vmapped program) and their KLs.
2. ``attn-only-1l`` (shipped; 4 heads): each head's top skip-trigrams read off its full
   QK/OV circuits (`jaxinterp.analysis.circuits.skip_trigrams`, after `process_weights`).
3. The factored form's failure ("keep ... in mind" / "keep ... at bay"): a source token
   whose OV circuit raises two outputs ``o1``, ``o2`` that follow different destination
   tokens ``d1``, ``d2`` in the corpus. The head cannot make ``o1`` depend on ``d1``: with
   the source in context it raises ``o2`` after ``d1`` too, which the corpus never does.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from jaxinterp import circuits, toy
from jaxinterp.toy.bigram import bigram_counts, bigram_entropy, bigram_kl, model_next_token_logprobs
from jaxinterp.toy.corpus import shakespeare_texts, split_heldout
from jaxinterp.toy.lm import encode_corpus, train_lms, unstack
from jaxinterp.toy.make import SPECS

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
WINDOW = 16  # how far back a skip-trigram's source may be


def bigram_section(tok, tokens):
    V = tok.vocab_size
    counts = bigram_counts(tokens, V)
    H = bigram_entropy(counts)
    uni = np.bincount(tokens, minlength=V) / len(tokens)
    H_uni = float(-(uni[uni > 0] * np.log(uni[uni > 0])).sum())
    model, _ = toy.load("bigram-0l")
    kl = bigram_kl(counts, model_next_token_logprobs(model))
    print(f"training text: {len(tokens)} tokens, vocabulary {V}")
    print(f"  unigram entropy H(next)            {H_uni:.3f} nats")
    print(f"  bigram conditional entropy H(next|current) {H:.3f} nats")
    print(f"  bigram-0l: KL(empirical bigram || model) = {kl:.4f} nats (cross-entropy {H + kl:.3f})")
    spec = SPECS["bigram-0l"]
    steps = 40 if QUICK else spec.steps
    t = time.time()
    run = train_lms(spec.config(V), tokens, seeds=[1, 2, 3], steps=steps, learning_rate=spec.learning_rate)
    kls = [bigram_kl(counts, model_next_token_logprobs(unstack(run.models, i))) for i in range(3)]
    print(f"  seeds 1-3 trained together ({steps} steps, {time.time() - t:.0f} s): KL {np.round(kls, 4).tolist()}")


def skip_trigram_section(tok):
    model, _ = toy.load("attn-only-1l")
    model = ji.process_weights(model)
    print("\nattn-only-1l: top skip-trigrams per head ('source' ... 'destination' -> 'out'; OV, QK score)")
    for h in range(model.cfg.n_heads):
        print(f"  head 0.{h}:")
        for tri in circuits.skip_trigrams(model, 0, h, k=6, tokenizer=tok):
            print(f"    {tri.text:45s} OV {tri.ov_score:6.2f}  QK {tri.qk_score:6.2f}")
    return model


def _context_mask(tokens, src):
    """positions t where ``src`` occurs among tokens[t - WINDOW : t]."""
    hits = np.concatenate([[0], np.cumsum(tokens == src)])
    t = np.arange(len(tokens))
    return (hits[t] - hits[np.maximum(t - WINDOW, 0)]) > 0


def factored_failure_section(model, tok, tokens):
    print("\nthe factored form's failure: one source, two outputs that follow different destinations")
    found = 0
    cur, nxt = tokens[:-1], tokens[1:]
    for h in range(model.cfg.n_heads):
        ov = circuits.full_ov_circuit(model, 0, h)[0, 0]
        vals, srcs, outs = ov.top_entries(300)
        by_src = {}
        for s, o in zip(np.asarray(srcs).tolist(), np.asarray(outs).tolist()):
            by_src.setdefault(s, []).append(o)
        for src, outs_s in by_src.items():
            if len(outs_s) < 2 or found >= 3:
                continue
            ctx = _context_mask(tokens, src)[:-1]
            # for each output: the destination it follows most often with the source in context
            best = []
            for o in outs_s[:4]:
                sel = ctx & (nxt == o)
                if sel.sum() < 5:
                    continue
                d = np.bincount(cur[sel], minlength=tok.vocab_size)
                best.append((o, int(d.argmax()), int(d.max())))
            pairs = [(a, b) for i, a in enumerate(best) for b in best[i + 1 :] if a[1] != b[1]]
            for (o1, d1, n11), (o2, d2, n22) in pairs[:1]:
                n12 = int((ctx & (cur == d1) & (nxt == o2)).sum())
                n21 = int((ctx & (cur == d2) & (nxt == o1)).sum())
                if n12 + n21 > 0.2 * (n11 + n22):
                    continue
                s, o1s, o2s, d1s, d2s = (repr(tok.decode([x])) for x in (src, o1, o2, d1, d2))
                print(f"  head 0.{h}: source {s}: corpus counts with {s} in the last {WINDOW} tokens:")
                print(f"    {s} ... {d1s} -> {o1s}: {n11:4d}   {s} ... {d1s} -> {o2s}: {n12:4d}")
                print(f"    {s} ... {d2s} -> {o2s}: {n22:4d}   {s} ... {d2s} -> {o1s}: {n21:4d}")
                _model_effect(model, tok, tokens, ctx, src, d1, o1, o2)
                found += 1
    if not found:
        print("  (no such pair among the top OV entries)")


def _model_effect(model, tok, tokens, ctx, src, d1, o1, o2):
    """On real contexts '... src ... d1', the change in log P(o1) and log P(o2) when the
    source token is replaced by a neutral one: the head raises both."""
    ends = np.flatnonzero(ctx[: len(tokens) - 1] & (tokens[:-1] == d1))
    ends = ends[ends >= WINDOW][:32]
    if len(ends) == 0:
        return
    ctxs = np.stack([tokens[e - WINDOW + 1 : e + 1] for e in ends])  # last token is d1
    ablated = np.where(ctxs == src, tok.encode(" the")[0], ctxs)
    with_src, without = _last_logprobs(model, ctxs), _last_logprobs(model, ablated)
    d = (with_src - without).mean(0)
    print(
        f"    model after {tok.decode([int(d1)])!r} ({len(ends)} corpus contexts), source present vs replaced by ' the':"
        f" dlogP({tok.decode([o1])!r}) = {d[o1]:+.2f}, dlogP({tok.decode([o2])!r}) = {d[o2]:+.2f}"
    )


def _last_logprobs(model, contexts):
    """log-probabilities of the next token after each context ``[batch, pos]``."""
    return np.asarray(jax.nn.log_softmax(model(jnp.asarray(contexts))[:, -1].astype(jnp.float32), axis=-1))


def main():
    _, tok = toy.load("bigram-0l")
    train_texts, _ = split_heldout(shakespeare_texts(), 0.05)
    if QUICK:
        train_texts = train_texts[:6]
    tokens = encode_corpus(tok, train_texts)
    bigram_section(tok, tokens)
    model = skip_trigram_section(tok)
    factored_failure_section(model, tok, tokens)


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
