"""Training SAEs and transcoders on streamed activations, with checkpoints that resume
bit-identically.

The loop: for each store fill (a shuffled buffer of activations), one compiled
`jax.lax.scan` runs its batches through the optax update (no host round trip per
step); a tqdm bar shows loss, L0 and FVU per fill. The loss per batch is

    sum_d (y - y_hat)^2  (mean over tokens)
      + coefficient(step) * sparsity          (variant's penalty; linear warm-up)
      + aux_coefficient * AuxK                 (dead latents predict the residual, Gao et al.)

Activations are scaled by one scalar per site so that ``E ||x||^2 = d`` (estimated on
the first fill); the returned SAE has the scale folded back in (`SAE.fold_scale`), so it
acts on raw activations. Variants with ``cfg.unit_norm_decoder`` keep decoder rows at
unit norm: the gradient's component along each row is removed before the update and
rows are renormalised after it.

Checkpoints (``checkpoint_dir``): every ``checkpoint_every`` fills, a directory
``step-N`` holding ``state.safetensors`` (SAE, optimizer state, dead-latent counters)
and ``state.json`` (step, data position, seed, scales, config) is written under a
temporary name and renamed into place; then ``latest`` (a one-line file) is replaced
atomically. `train_sae` with the same arguments resumes from ``latest``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from .errors import SAEError
from .modules import SAE
from .ops import kth_largest
from .store import ActivationStore

__all__ = ["TrainConfig", "TrainLoop", "TrainResult", "train_sae", "train_chunk", "make_optimizer", "auxk_loss"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    ``n_steps``: optimizer steps (rounded up to whole fills); ``batch_size``: tokens per step.
    ``lr``, ``lr_warmup`` (steps of linear warm-up from 0), ``lr_decay_frac`` (final
    fraction of steps decaying linearly to 0; Anthropic's April 2024 recipe uses 0.2).
    ``sparsity_coefficient``: weight of the variant's penalty (L1 for ReLU, L0 for
    JumpReLU; unused by TopK variants), ramped linearly over ``sparsity_warmup`` steps.
    ``aux_k``: latents in the AuxK loss (``None``: ``d_in // 2`` for TopK/BatchTopK, off
    otherwise; 0: off); ``aux_coefficient`` (Gao et al.: 1/32); ``dead_tokens``: a latent
    is dead once it has not fired for this many training tokens.
    ``normalize``: scale activations to ``E||x||^2 = d``. ``init_b_dec``: ``"mean"``
    (the first fill's mean target) or ``"zero"``. ``grad_clip``: global norm clip.
    ``checkpoint_every``: fills between checkpoints. ``target_l0``: steer the sparsity
    coefficient towards this training L0 (ReLU, JumpReLU), so variants can be compared
    at a matched L0: after each step ``coefficient *= exp(target_l0_rate *
    clip(log(L0 / target), -1, 1))`` (a log-ratio controller in the training state,
    checkpointed like the rest; symmetric in over- and undershoot, and bounded when
    the initial L0 is 20x the target). While the sparsity warm-up ramps the
    penalty, the controller holds still (no wind-up: it would otherwise keep raising the
    coefficient while the ramp, not the coefficient, keeps L0 high, then overshoot).
    ``threshold_lr_scale``: the learned thresholds' (JumpReLU's log thresholds)
    learning rate relative to ``lr``; Adam moves each parameter by about ``lr`` per
    step, far too slowly for thresholds that must travel by O(1) for the L0 to follow
    the controller.
    ``seed``: the data order's seed is
    the store's; this one is for nothing random in the loop (kept for the record).
    """

    n_steps: int
    batch_size: int = 4096
    lr: float = 4e-4
    lr_warmup: int = 50
    lr_decay_frac: float = 0.2
    sparsity_coefficient: float = 0.0
    sparsity_warmup: int = 0
    aux_k: Optional[int] = None
    aux_coefficient: float = 1 / 32
    dead_tokens: int = 1_000_000
    normalize: bool = True
    init_b_dec: str = "mean"
    grad_clip: float = 1.0
    checkpoint_every: int = 1
    target_l0: Optional[float] = None
    target_l0_rate: float = 0.05
    threshold_lr_scale: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("n_steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SAEError(f"TrainConfig.{name} must be a positive int, got {v!r}")
        if self.init_b_dec not in ("mean", "zero"):
            raise SAEError(f"TrainConfig.init_b_dec must be 'mean' or 'zero', got {self.init_b_dec!r}")
        if not self.threshold_lr_scale > 0:
            raise SAEError(f"TrainConfig.threshold_lr_scale must be > 0, got {self.threshold_lr_scale}")
        if self.target_l0 is not None and not self.target_l0 > 0:
            raise SAEError(f"TrainConfig.target_l0 must be > 0 latents per token, got {self.target_l0}")
        if not 0 <= self.lr_decay_frac <= 1:
            raise SAEError(f"TrainConfig.lr_decay_frac must be in [0, 1], got {self.lr_decay_frac}")


class TrainResult(eqx.Module):
    """``sae`` (for raw activations), per-fill ``history`` (step, loss, l0, fvu, dead
    fraction: numpy arrays), the activation scales used, and the steps run."""

    sae: SAE
    history: dict
    in_scale: float
    out_scale: float
    steps: int


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Adam with global-norm clipping, linear warm-up, constant, linear decay to 0."""
    decay_start = max(cfg.lr_warmup, int(round(cfg.n_steps * (1 - cfg.lr_decay_frac))))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.lr, max(cfg.lr_warmup, 1)),
            optax.constant_schedule(cfg.lr),
            optax.linear_schedule(cfg.lr, 0.0, max(cfg.n_steps - decay_start, 1)),
        ],
        [max(cfg.lr_warmup, 1), decay_start],
    )
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(schedule))


def auxk_loss(
    sae: SAE,
    pre: Float[Array, "batch d_sae"],
    residual: Float[Array, "batch d_out"],
    dead: Float[Array, " d_sae"],
    k: int,
) -> Float[Array, ""]:
    """AuxK (Gao et al. 2024): the ``k`` largest pre-activations among dead latents
    reconstruct the main reconstruction's residual; ``mean_tokens ||residual - e_hat||^2``."""
    masked = jnp.where(dead > 0, pre, -jnp.inf)
    kth = kth_largest(masked, k)
    acts = jnp.where((masked >= kth) & (masked > 0), pre, 0.0)
    return jnp.sum((residual - acts @ sae.W_dec) ** 2, axis=-1).mean()


class TrainLoop(eqx.Module):
    """The static parts of one training program. Hashable by value (the optimizer is
    rebuilt from ``cfg`` when traced), so equal settings reuse the compiled program
    across fills and across `train_sae` calls."""

    cfg: TrainConfig = eqx.field(static=True)
    aux_k: int = eqx.field(static=True)

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return make_optimizer(self.cfg)


def _project_out_parallel(grad_W: Array, W: Array) -> Array:
    unit = W / jnp.linalg.norm(W, axis=-1, keepdims=True)
    return grad_W - jnp.sum(grad_W * unit, axis=-1, keepdims=True) * unit


def _step(loop: TrainLoop, carry, batch):
    sae, opt_state, since_fired, step, log_coef = carry
    x, y = batch
    cfg = loop.cfg
    ramp = 1.0 if cfg.sparsity_warmup <= 0 else jnp.minimum(1.0, (step + 1) / cfg.sparsity_warmup)
    coefficient = jnp.exp(log_coef) * ramp
    dead = (since_fired >= cfg.dead_tokens).astype(jnp.float32)
    params, static = eqx.partition(sae, eqx.is_inexact_array)

    def loss_fn(params):
        model = eqx.combine(params, static)
        pre = model.pre_acts(x)
        acts = model.train_activation(pre)
        y_hat = model.decode(acts)
        err = y - y_hat
        mse = jnp.sum(err**2, axis=-1).mean()
        loss = mse + coefficient * model.sparsity(pre, acts).mean()
        if loop.aux_k:
            aux = jax.lax.cond(
                dead.sum() > 0,
                lambda: auxk_loss(model, pre, jax.lax.stop_gradient(err), dead, loop.aux_k),
                lambda: jnp.zeros((), pre.dtype),
            )
            loss = loss + cfg.aux_coefficient * aux
        return loss, (pre, acts, err)

    (loss, (pre, acts, err)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if sae.cfg.unit_norm_decoder:
        grads = eqx.tree_at(lambda g: g.W_dec, grads, _project_out_parallel(grads.W_dec, sae.W_dec))
    updates, opt_state = loop.optimizer.update(grads, opt_state, params)
    if cfg.threshold_lr_scale != 1.0:
        updates = sae.scale_threshold_updates(updates, cfg.threshold_lr_scale)
    params = optax.apply_updates(params, updates)
    sae = eqx.combine(params, static)
    if sae.cfg.unit_norm_decoder:
        sae = eqx.tree_at(lambda s: s.W_dec, sae, sae.W_dec / jnp.linalg.norm(sae.W_dec, axis=-1, keepdims=True))
    sae = sae.after_step(jax.lax.stop_gradient(pre), jax.lax.stop_gradient(acts), step)
    fired = (acts > 0).any(0)
    since_fired = jnp.where(fired, 0, since_fired + x.shape[0])
    l0 = (acts > 0).sum(-1).mean()
    fvu = jnp.sum(err**2) / jnp.sum((y - y.mean(0)) ** 2)
    if cfg.target_l0 is not None:
        # Log-ratio error, clipped: early in training L0 can be 20-100x the target. Held
        # during the sparsity warm-up (anti-wind-up).
        err_log = jnp.clip(jnp.log(jnp.maximum(l0, 1e-3) / cfg.target_l0), -1.0, 1.0)
        log_coef = log_coef + jnp.where(ramp >= 1.0, cfg.target_l0_rate * err_log, 0.0)
    return (sae, opt_state, since_fired, step + 1, log_coef), jnp.stack([loss, l0, fvu, jnp.exp(log_coef)])


@eqx.filter_jit
def train_chunk(
    loop: TrainLoop,
    sae: SAE,
    opt_state,
    since_fired: Int[Array, " d_sae"],
    step: Int[Array, ""],
    log_coef: Float[Array, ""],
    xs,
    ys,
):
    """Run the batches ``xs [n, batch, d_in]`` (targets ``ys``) through ``n`` optimizer
    steps in one `lax.scan`; returns the new state and per-step ``[loss, l0, fvu, coefficient]``."""
    carry, stats = jax.lax.scan(lambda c, b: _step(loop, c, b), (sae, opt_state, since_fired, step, log_coef), (xs, ys))
    return carry, stats


# ------------------------------------------------------------------------ checkpoints


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))
    return {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}


def _unflat(template, arrays: dict, what: str):
    params, static = eqx.partition(template, eqx.is_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if len(arrays) != len(leaves):
        raise SAEError(
            f"checkpoint {what} has {len(arrays)} arrays, the run expects {len(leaves)}: resume with the same settings"
        )
    new = []
    for i, leaf in enumerate(leaves):
        a = arrays[f"{i:05d}"]
        if a.shape != leaf.shape:
            raise SAEError(f"checkpoint {what} array {i} has shape {a.shape}, the run expects {leaf.shape}")
        new.append(jnp.asarray(a, leaf.dtype))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)


def _save_checkpoint(directory: str, state: tuple, meta: dict) -> None:
    from safetensors.numpy import save_file

    sae, opt_state, since_fired, step, log_coef = state
    name = f"step-{int(step):08d}"
    final, tmp = os.path.join(directory, name), os.path.join(directory, name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    arrays = {f"sae.{k}": v for k, v in _flat(sae).items()}
    arrays.update({f"opt.{k}": v for k, v in _flat(opt_state).items()})
    arrays["since_fired"] = np.asarray(since_fired)
    arrays["log_coef"] = np.asarray(log_coef)
    save_file(arrays, os.path.join(tmp, "state.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({**meta, "step": int(step)}, f, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    with open(os.path.join(directory, "latest.tmp"), "w") as f:
        f.write(name)
    os.replace(os.path.join(directory, "latest.tmp"), os.path.join(directory, "latest"))
    for old in os.listdir(directory):  # keep only the latest complete checkpoint
        if old.startswith("step-") and old != name:
            shutil.rmtree(os.path.join(directory, old), ignore_errors=True)


def _load_checkpoint(directory: str, template: tuple, meta: dict):
    from safetensors.numpy import load_file

    latest = os.path.join(directory, "latest")
    if not os.path.isfile(latest):
        return None
    with open(latest) as f:
        path = os.path.join(directory, f.read().strip())
    try:
        with open(os.path.join(path, "state.json")) as f:
            saved = json.load(f)
        arrays = load_file(os.path.join(path, "state.safetensors"))
    except (OSError, ValueError) as e:
        raise SAEError(f"checkpoint {path} is unreadable ({e}); delete {directory} to start over") from None
    for key in ("config", "sae_config", "kind", "hyper", "store_seed", "fill_size"):
        if saved.get(key) != meta.get(key):
            raise SAEError(
                f"checkpoint {path} was written with {key}={saved.get(key)!r}, this run has {meta.get(key)!r}: "
                "resume with the same settings or use a fresh checkpoint_dir"
            )
    sae_t, opt_t, fired_t, _, coef_t = template
    sae = _unflat(sae_t, {k[4:]: v for k, v in arrays.items() if k.startswith("sae.")}, "SAE")
    opt = _unflat(opt_t, {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}, "optimizer state")
    since = jnp.asarray(arrays["since_fired"], fired_t.dtype)
    coef = jnp.asarray(arrays["log_coef"], coef_t.dtype)
    return (sae, opt, since, jnp.asarray(saved["step"], jnp.int32), coef), saved


# ------------------------------------------------------------------------ the loop


def _scale(a: Array) -> float:
    return float(jnp.sqrt(a.shape[-1] / jnp.mean(jnp.sum(a**2, axis=-1))))


def train_sae(
    sae: SAE,
    store: ActivationStore,
    cfg: TrainConfig,
    *,
    checkpoint_dir: Optional[str] = None,
    progress: bool = True,
    stop_after_fills: Optional[int] = None,
) -> TrainResult:
    """Train ``sae`` (from `init_sae`) on ``store``'s activations.

    Fill ``i`` of the store feeds steps ``[i * n, (i + 1) * n)`` with ``n = fill_size //
    batch_size``; ``ceil(n_steps / n)`` fills run. With ``checkpoint_dir``, an existing
    checkpoint is resumed (same arguments required) and new ones are written every
    ``cfg.checkpoint_every`` fills. ``stop_after_fills``: return early after that many
    fills of this call (for tests and time-boxed runs).
    """
    if not isinstance(sae, SAE):
        raise SAEError(f"sae must be an SAE (see init_sae), got {type(sae).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise SAEError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    per_fill = store.fill_size // cfg.batch_size
    if per_fill < 1:
        raise SAEError(f"batch_size={cfg.batch_size} exceeds the store's fill of {store.fill_size} tokens")
    n_fills = -(-cfg.n_steps // per_fill)
    aux_k = (
        cfg.aux_k
        if cfg.aux_k is not None
        else (min(sae.cfg.d_in // 2, sae.cfg.d_sae) if sae.kind in ("topk", "batchtopk") else 0)
    )
    loop = TrainLoop(dataclasses.replace(cfg, n_steps=n_fills * per_fill), aux_k)

    meta = {
        "config": dataclasses.asdict(cfg),
        "sae_config": sae.cfg.to_dict(),
        "kind": sae.kind,
        "hyper": sae.hyperparameters(),
        "store_seed": store.seed,
        "fill_size": store.fill_size,
    }
    first_x, first_y = store.fill(0)
    in_scale = _scale(first_x) if cfg.normalize else 1.0
    out_scale = (in_scale if first_y is first_x else _scale(first_y)) if cfg.normalize else 1.0
    if cfg.init_b_dec == "mean":
        sae = eqx.tree_at(lambda s: s.b_dec, sae, jnp.mean(first_y, 0) * out_scale)
    if cfg.target_l0 is not None:
        n = min(first_x.shape[0], 4 * cfg.batch_size)
        sae = sae.calibrate(sae.pre_acts(first_x[:n] * in_scale), cfg.target_l0)
    params = eqx.filter(sae, eqx.is_inexact_array)
    log_coef = jnp.log(jnp.asarray(max(cfg.sparsity_coefficient, 1e-30), jnp.float32))
    state = (
        sae,
        loop.optimizer.init(params),
        jnp.zeros((sae.cfg.d_sae,), jnp.int32),
        jnp.asarray(0, jnp.int32),
        log_coef,
    )
    history = {"step": [], "loss": [], "l0": [], "fvu": [], "dead": [], "coefficient": []}
    start_fill = 0
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        loaded = _load_checkpoint(checkpoint_dir, state, meta)
        if loaded is not None:
            state, saved = loaded
            in_scale, out_scale = saved["in_scale"], saved["out_scale"]
            history = saved["history"]
            start_fill = int(saved["step"]) // per_fill

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_fills * per_fill, initial=start_fill * per_fill, desc=f"{sae.kind} SAE", unit="step")
    done_here = 0
    for fill in range(start_fill, n_fills):
        xs, ys = store.batches(fill, cfg.batch_size)
        xs = xs * in_scale
        ys = xs if ys is None else ys * out_scale
        state, stats = train_chunk(loop, *state, xs, ys)
        stats = np.asarray(stats).mean(0)
        dead = float(np.mean(np.asarray(state[2]) >= cfg.dead_tokens))
        for key, v in zip(
            ("step", "loss", "l0", "fvu", "coefficient", "dead"), (int(state[3]), *map(float, stats), dead)
        ):
            history[key].append(v)
        if bar is not None:
            bar.update(per_fill)
            bar.set_postfix(loss=f"{stats[0]:.4g}", L0=f"{stats[1]:.1f}", FVU=f"{stats[2]:.3f}", dead=f"{dead:.2f}")
        if checkpoint_dir is not None and ((fill + 1) % cfg.checkpoint_every == 0 or fill + 1 == n_fills):
            _save_checkpoint(
                checkpoint_dir,
                state,
                {
                    **meta,
                    "in_scale": in_scale,
                    "out_scale": out_scale,
                    "history": history,
                    "data_position": {"fill": fill + 1, "step": int(state[3])},
                },
            )
        done_here += 1
        if stop_after_fills is not None and done_here >= stop_after_fills:
            break
    if bar is not None:
        bar.close()
    trained = state[0].fold_scale(in_scale, out_scale)
    # BatchTopK's inference threshold from the first fill (at most 2**25 pre-activations).
    n_cal = max(1, min(first_x.shape[0], 2**25 // trained.cfg.d_sae))
    trained = trained.finalize(first_x[:n_cal])
    return TrainResult(trained, {k: np.asarray(v) for k, v in history.items()}, in_scale, out_scale, int(state[3]))
