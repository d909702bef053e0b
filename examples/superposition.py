"""Toy models of superposition (Elhage et al. 2022), every figure from one library call each.

    .venv/bin/python examples/superposition.py           # ~3-5 min on 2 CPU cores
    JAXINTERP_QUICK=1 .venv/bin/python examples/superposition.py   # < 30 s, tiny budgets

1. 5 features in 2 dimensions: importance 0.7^i at sparsity 0, equal importance at
   sparsity 0.7 and 0.9: the W^T W heatmaps, feature norms and the 2-D directions (two
   antipodal pairs at S = 0.7, a pentagon at S = 0.9); the angles and norms are printed.
2. Feature dimensionality against 1/(1-S) for n = 80 features in m = 8 dimensions
   (one compiled, vmapped sweep over sparsity).
3. The 2-feature / 1-neuron phase diagram over (relative importance, density), trained
   (every cell x 3 seeds in one compiled call) and the analytic boundaries on top.

Writes ``out/superposition/*.png``.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

import jaxinterp
from jaxinterp import toy
from jaxinterp.viz import superposition as vs

OUT = os.path.join("out", "superposition")
QUICK = os.environ.get("JAXINTERP_QUICK") == "1"


def five_in_two():
    """Equal importance at S = 0.7 and 0.9; importance 0.7^i at S = 0 (with equal
    importance and dense features every 2-D subspace is optimal, so norms are arbitrary)."""
    n_seeds = 2 if QUICK else 8
    settings = [(0.0, 0.7), (0.7, 1.0), (0.9, 1.0)]
    keys, S, I = toy.tms_grid(
        jax.random.key(0), [s for s, _ in settings], toy.importance_powers(5, [0.7, 1.0]), n_seeds
    )
    # keep the (sparsity, ratio) pairs of `settings` from the 3 x 2 grid
    rows = np.concatenate([np.arange(n_seeds) + (2 * i + (r == 1.0)) * n_seeds for i, (_, r) in enumerate(settings)])
    run = toy.train_tms(keys[rows], S[rows], I[rows], d_hidden=2, steps=300 if QUICK else 3000)
    W = np.asarray(run.models.W).reshape(len(settings), n_seeds, 2, 5)
    best = np.asarray(run.eval_loss).reshape(len(settings), n_seeds).argmin(-1)
    print(f"5 features in 2 dimensions (best of {n_seeds} seeds), all in one compiled call:")
    fmt = lambda xs, d: "[" + ", ".join(f"{x:.{d}f}" for x in xs) + "]"  # noqa: E731
    for i, (s, r) in enumerate(settings):
        Wb = W[i, best[i]]
        norms = np.linalg.norm(Wb, axis=0)
        shown = norms > 0.5
        angles = np.sort(np.degrees(np.arctan2(Wb[1], Wb[0]))[shown])
        gaps = np.diff(np.r_[angles, angles[0] + 360]) if len(angles) else []
        dims = np.asarray(toy.feature_dimensionality(Wb))
        print(
            f"  S={s:.1f}, importance {r}^i: represented {int(shown.sum())}/5, norms {fmt(norms, 3)}, "
            f"angle gaps {fmt(gaps, 1)} deg, D_i {fmt(dims, 2)}"
        )
        vs.superposition_summary(Wb, title=f"S = {s}, importance {r}^i", path=f"{OUT}/gram_S{s}.png")
        vs.feature_directions(
            Wb,
            importance=[r**k for k in range(5)],
            title=f"5 features in 2 dims, S = {s}",
            path=f"{OUT}/directions_S{s}.png",
        )


def dimensionality():
    n, m = (20, 4) if QUICK else (80, 8)
    sparsities = 1 - np.geomspace(1.0, 0.01 if QUICK else 0.003, 8 if QUICK else 24)
    keys, S, I = toy.tms_grid(jax.random.key(1), sparsities, toy.importance_powers(n, [1.0]), 1)
    t = time.time()
    run = toy.train_tms(keys, S, I, d_hidden=m, steps=300 if QUICK else 6000, learning_rate=3e-3)
    W = run.models.W
    D = np.asarray(toy.feature_dimensionality(W))
    Dstar = np.asarray(toy.dimensions_per_feature(W))
    print(
        f"\nfeature dimensionality, n={n}, m={m}, {len(sparsities)} sparsities in one call ({time.time() - t:.1f} s):"
    )
    for s, d in zip(sparsities[:: max(1, len(sparsities) // 6)], Dstar[:: max(1, len(sparsities) // 6)]):
        print(f"  1/(1-S)={1 / (1 - s):7.1f}  D*={d:.3f}")
    vs.dimensionality_plot(
        sparsities, D, Dstar, title=f"{n} features in {m} dimensions", path=f"{OUT}/dimensionality.png"
    )


def phase_diagram():
    k = 5 if QUICK else 15
    r = np.geomspace(0.1, 10, k)
    p = np.geomspace(0.01, 1, k)
    t = time.time()
    diagram = toy.train_phase_diagram(jax.random.key(0), r, p, n_seeds=2 if QUICK else 3, steps=600 if QUICK else 4000)
    print(f"\nphase diagram: {k}x{k} cells x seeds in one call ({time.time() - t:.1f} s)")
    print("  trained phase (rows: density 1 -> 0.01; columns: relative importance 0.1 -> 10;")
    print("  0 not represented, 1 dedicated, 2 superposition); analytic on the right")
    for row_t, row_a, dens in zip(diagram.phase[::-1], diagram.analytic[::-1], p[::-1]):
        print(f"  p={dens:5.3f}  {''.join(map(str, row_t))}   {''.join(map(str, row_a))}")
    print(f"  agreement with the analytic phases: {diagram.agreement():.1%}")
    vs.phase_diagram_plot(diagram, path=f"{OUT}/phase_diagram.png")


def main():
    os.makedirs(OUT, exist_ok=True)
    five_in_two()
    dimensionality()
    phase_diagram()
    print(f"\nwrote {OUT}/")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
