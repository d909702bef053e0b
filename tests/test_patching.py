"""Activation patching sweeps equal a Python loop of single patches.

The reference below is written independently of `jaxinterp.causal.patching`: for every cell
of the result it runs ``model(base, [Patch(site, source_cache, layer=..., ...)])`` and
evaluates the metric. Every sweep engine (fast staircase, plain vmap, fast with the
opt-in shortcuts, chunked) must reproduce it, on tiny models of each architecture
family the fast engine handles (learned and rotary positions, GQA, parallel blocks,
Gemma 2 soft-capping / windows / post-norms, top-k MoE) and on a bidirectional model, where the
sweep falls back to the plain engine.
"""

from __future__ import annotations

import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxinterp import ModelConfig, Patch, Transformer
from jaxinterp.causal.patching import PatchingError, activation_patch, patch_grid, readout_for, sweep
from jaxinterp.causal.patching.fast import cached_runs, fast_layout, fast_sweep, group_sizes
from jaxinterp.causal.patching.layout import build_blocks
from jaxinterp.core.labelled import LabelledArray
from jaxinterp.core.metrics import custom, logit_diff

N_POS = 7
CONFIGS = {
    "gpt2": ModelConfig(d_model=32, n_layers=3, n_heads=4, d_head=8, d_vocab=40, n_ctx=16, d_mlp=64, act_fn="gelu_new"),
    "llama": ModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_vocab=40,
        n_ctx=16,
        d_mlp=48,
        act_fn="silu",
        normalization="rmsnorm",
        positional="rotary",
        gated_mlp=True,
    ),
    "neox": ModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_head=8,
        d_vocab=40,
        n_ctx=16,
        d_mlp=64,
        positional="rotary",
        rotary_dim=4,
        parallel_attn_mlp=True,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
    ),
    "gemma2": ModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_vocab=40,
        n_ctx=16,
        d_mlp=48,
        act_fn="gelu_pytorch_tanh",
        normalization="rmsnorm",
        norm_weight_offset=1.0,
        positional="rotary",
        gated_mlp=True,
        attn_logit_softcap=5.0,
        final_logit_softcap=3.0,
        layer_windows=(3, None),
        post_attn_norm=True,
        post_mlp_norm=True,
        embed_scale=32**0.5,
    ),
    "mixtral": ModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_vocab=40,
        n_ctx=16,
        d_mlp=24,
        act_fn="silu",
        normalization="rmsnorm",
        positional="rotary",
        gated_mlp=True,
        n_experts=4,
        experts_per_token=2,
    ),
    "bert": ModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_head=8,
        d_vocab=40,
        n_ctx=16,
        d_mlp=64,
        causal=False,
        post_norm=True,
        embed_norm=True,
    ),
}
ANSWER, WRONG = 5, 9


def random_model(cfg: ModelConfig, seed: int, std: float = 0.3) -> Transformer:
    """A model with numpy-drawn weights (faster than many small eager JAX ops). Large
    weights so patches move the metric by O(1); norm weights near 1, random biases."""
    shapes = jax.eval_shape(lambda: Transformer.init(cfg, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if jnp.issubdtype(leaf.dtype, jnp.integer):  # the per-layer attention windows
            return jnp.asarray(cfg.windows, leaf.dtype)
        if jax.tree_util.keystr(path).endswith(".w"):  # norm weights
            return jnp.asarray(1.0 - cfg.norm_weight_offset + 0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
        return jnp.asarray(std * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def models():
    return {name: random_model(cfg, i) for i, (name, cfg) in enumerate(CONFIGS.items())}


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 40, N_POS)
    corrupt = clean.copy()
    corrupt[2] = (clean[2] + 7) % 40  # prompts agree at positions 0, 1 (and 3, 5, 6)
    corrupt[4] = (clean[4] + 3) % 40
    return jnp.asarray(clean), jnp.asarray(corrupt)


def last_logit_diff():
    return logit_diff(ANSWER, WRONG)


def mid_logit_diff():
    # Reads position 3: patches at later positions leave it exactly as the base run.
    return logit_diff(ANSWER, WRONG, pos=3)


def undeclared_metric(logits):
    # No `reads` hint: reads several positions and the whole vocabulary.
    return jax.nn.log_softmax(logits[2])[ANSWER] + 0.5 * logits[-1, WRONG] - logits[5].mean()


METRICS = {"last": last_logit_diff, "mid": mid_logit_diff, "undeclared": lambda: undeclared_metric}

# Independent of jaxinterp.causal.patching: which Patch keyword each swept axis sets, and its size.
AXIS_KEYWORD = {
    "layer": "layer",
    "pos": "pos",
    "dest": "pos",
    "src": "key_pos",
    "head": "head",
    "neuron": "neuron",
    "expert": "expert",
}


def axis_size(cfg, site, axis):
    if axis == "layer":
        return cfg.n_layers
    if axis in ("pos", "dest", "src"):
        return N_POS
    if axis == "head":
        return cfg.n_kv_heads if site in ("attn.k", "attn.v", "attn.rot_k") else cfg.n_heads
    if axis == "neuron":
        return cfg.d_mlp
    if axis == "expert":
        return cfg.n_experts
    raise AssertionError(axis)


@pytest.fixture(scope="module")
def caches(models, prompts):
    """Every site of every model on both prompts (one compiled run per model)."""
    return {
        (name, i): model.run_with_cache(tokens, names=lambda site: True)[1]
        for name, model in models.items()
        for i, tokens in enumerate(prompts)
    }


def loop_reference(model, source_cache, base, metric, site, over, fixed):
    value = source_cache[site]  # stacked [layer, ...]
    shape = tuple(axis_size(model.cfg, site, a) for a in over)

    # One patch per call, through the model's own forward pass; the cell's indices are
    # arguments, so the loop compiles once (and each call skips `model(...)`'s eager checks).
    @jax.jit
    def one(model, value, index):
        where = {AXIS_KEYWORD[a]: i for a, i in zip(over, index)}
        return metric(model.forward(base, [Patch(site, value, **where, **fixed)])[0])

    out = np.zeros(shape)
    for index in itertools.product(*map(range, shape)):
        out[index] = float(one(model, value, tuple(np.int32(i) for i in index)))
    return out


# (model, site, over, fixed locations, direction, metric, engines)
CASES = [
    ("gpt2", "resid_pre", ("layer", "pos"), {}, "denoising", "last", ("fast", "plain", "shortcuts", "chunked")),
    ("gpt2", "resid_pre", ("layer", "pos"), {}, "noising", "undeclared", ("fast",)),
    ("gpt2", "resid_pre", ("layer", "pos"), {}, "denoising", "mid", ("shortcuts",)),
    ("gpt2", "attn_out", ("layer", "pos"), {}, "denoising", "last", ("fast",)),
    ("gpt2", "mlp_out", ("layer", "pos"), {}, "noising", "last", ("fast",)),
    ("gpt2", "resid_mid", ("layer", "pos"), {}, "denoising", "last", ("fast",)),
    ("gpt2", "resid_post", ("layer", "pos"), {}, "denoising", "last", ("shortcuts",)),
    ("gpt2", "attn.z", ("layer", "head"), {}, "denoising", "last", ("fast", "plain")),
    ("gpt2", "attn.z", ("layer", "pos", "head"), {}, "noising", "last", ("shortcuts",)),
    ("gpt2", "attn.result", ("layer", "head"), {}, "denoising", "undeclared", ("fast",)),
    ("gpt2", "attn.q", ("layer", "pos", "head"), {}, "denoising", "last", ("fast",)),
    ("gpt2", "attn.v", ("layer", "head"), {}, "denoising", "last", ("fast",)),
    ("gpt2", "attn.pattern", ("layer", "head", "dest", "src"), {}, "denoising", "last", ("shortcuts",)),
    ("gpt2", "mlp.post", ("layer", "neuron"), {"pos": -1}, "denoising", "last", ("fast",)),
    ("llama", "resid_pre", ("layer", "pos"), {}, "denoising", "last", ("fast", "shortcuts")),
    ("llama", "resid_pre", ("layer", "pos"), {}, "noising", "mid", ("chunked",)),
    ("llama", "attn.z", ("layer", "head"), {}, "denoising", "last", ("fast",)),
    ("llama", "attn.k", ("layer", "pos", "head"), {}, "denoising", "last", ("shortcuts",)),
    ("llama", "attn.rot_q", ("layer", "pos"), {"head": 1}, "noising", "last", ("fast",)),
    ("llama", "attn.attn_scores", ("layer", "dest", "src"), {"head": 3}, "denoising", "last", ("fast",)),
    ("llama", "mlp.pre_linear", ("layer", "neuron"), {"pos": -2}, "denoising", "undeclared", ("fast",)),
    ("neox", "resid_pre", ("layer", "pos"), {}, "denoising", "last", ("shortcuts",)),
    ("neox", "attn_out", ("layer", "pos"), {}, "noising", "last", ("fast",)),
    ("neox", "mlp_out", ("layer", "pos"), {}, "denoising", "mid", ("fast",)),
    ("gemma2", "resid_pre", ("layer", "pos"), {}, "denoising", "last", ("shortcuts",)),
    ("gemma2", "attn.z", ("layer", "pos", "head"), {}, "noising", "last", ("fast",)),
    ("mixtral", "mlp.pre", ("layer", "expert"), {"pos": -1}, "denoising", "last", ("fast",)),
    ("mixtral", "resid_pre", ("layer", "pos"), {}, "noising", "last", ("shortcuts",)),
    ("bert", "resid_pre", ("layer", "pos"), {}, "denoising", "last", ("auto", "shortcuts")),
    ("bert", "attn.z", ("layer", "head"), {}, "noising", "undeclared", ("auto",)),
]

ENGINE_KWARGS = {
    "fast": dict(method="fast"),
    "plain": dict(method="plain"),
    "auto": dict(method="auto"),
    "shortcuts": dict(shortcuts=True),
    # Several chunks of unequal content: exercises balancing and pad rows.
    "chunked": dict(method="fast", batch_size=4),
}


@pytest.mark.parametrize(
    "model_name,site,over,fixed,direction,metric_name,engines",
    CASES,
    ids=[f"{c[0]}-{c[1]}-{'x'.join(c[2])}-{c[4]}-{c[5]}" for c in CASES],
)
def test_sweep_equals_loop(models, prompts, caches, model_name, site, over, fixed, direction, metric_name, engines):
    model = models[model_name]
    clean, corrupt = prompts
    metric = METRICS[metric_name]()
    base, source = (1, 0) if direction == "denoising" else (0, 1)
    expected = loop_reference(model, caches[model_name, source], prompts[base], metric, site, over, fixed)
    # The sweep must actually vary (a test that compares constants could not fail).
    assert np.ptp(expected) > 0.05
    for engine in engines:
        result = activation_patch(
            model, clean, corrupt, metric, site, over, direction=direction, **fixed, **ENGINE_KWARGS[engine]
        )
        assert isinstance(result, LabelledArray)
        assert result.dims == over
        got = np.asarray(result)
        assert got.shape == expected.shape, engine
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4, err_msg=f"engine {engine}")


@pytest.mark.parametrize(
    "model_name,site,over,shortcuts",
    [
        ("gpt2", "resid_pre", ("layer", "pos"), False),
        ("llama", "attn.z", ("layer", "pos", "head"), False),
        ("llama", "resid_pre", ("layer", "pos"), True),
    ],
)
def test_fast_engine_in_groups_of_small_blocks_equals_loop(models, prompts, caches, model_name, site, over, shortcuts):
    """Blocks of one row's length, so each layer runs several blocks, in groups of four
    and singly (and several chunks): still equal to the loop."""
    model = models[model_name]
    clean, corrupt = prompts
    metric = last_logit_diff()
    expected = loop_reference(model, caches[model_name, 0], corrupt, metric, site, over, {})
    grid = patch_grid(model.cfg, N_POS, site, over)
    readout = readout_for(metric, N_POS, model.cfg.d_vocab, columns=shortcuts)
    runs = cached_runs(model, corrupt, clean, site, metric, readout)
    layout = fast_layout(model.cfg, N_POS, grid, None, 2, max_block_tokens=N_POS)
    assert group_sizes(layout.shape)[0] >= 4 and layout.shape.blocks >= 4 and layout.n_chunks == 2
    got = fast_sweep(
        model, runs, grid, metric, readout, n_chunks=2, last_layer_subset=shortcuts, max_block_tokens=N_POS
    )
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["fast", "plain"])
def test_metrics_with_other_tokens_reuse_the_compiled_sweep(models, prompts, caches, caplog, method):
    """Metrics are pytrees: a logit difference of other tokens runs the sweep compiled
    for the first one (no compile logged), and still equals the loop. A new plain
    function does compile (the check can fail)."""
    model = models["gpt2"]
    clean, corrupt = prompts

    def compiles(metric):
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            out = np.asarray(activation_patch(model, clean, corrupt, metric, method=method, quick_compile=False))
        return out, [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]

    compiles(logit_diff(ANSWER, WRONG))
    other = logit_diff(WRONG, (ANSWER + 1) % 40)
    got, compiled = compiles(other)
    assert not compiled, compiled
    expected = loop_reference(model, caches["gpt2", 0], corrupt, other, "resid_pre", ("layer", "pos"), {})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    _, compiled = compiles(lambda logits: logits[-1, ANSWER] - logits[-1, WRONG])
    assert compiled


def test_shortcut_sweep_does_not_build_the_nan_padded_vocabulary_view():
    """With only the metric's columns computed, the metric sees a NaN-padded
    ``[pos, d_vocab]`` view that XLA must fold into its few reads: the compiled
    program's temporaries stay far below one such view per patch."""
    import equinox as eqx

    from jaxinterp.causal.patching.activation import _changing_patches
    from jaxinterp.causal.patching.fast import fast_program
    from jaxinterp.core.readout import split_metric

    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=5000, n_ctx=16, d_mlp=32)
    model = random_model(cfg, 3)
    rng = np.random.default_rng(1)
    clean = jnp.asarray(rng.integers(0, cfg.d_vocab, 16))
    corrupt = clean.at[3].set((int(clean[3]) + 1) % cfg.d_vocab)
    metric = logit_diff(11, 12)
    grid = patch_grid(cfg, 16, "resid_pre", ("layer", "pos"))
    readout = readout_for(metric, 16, cfg.d_vocab, columns=True)
    runs = cached_runs(model, corrupt, clean, "resid_pre", metric, readout)
    layout = fast_layout(cfg, 16, grid, _changing_patches(cfg, grid, runs))
    arrays, static = split_metric(metric, readout)
    compiled = fast_program.lower(
        model,
        runs,
        layout.data,
        arrays,
        shape=layout.shape,
        site="resid_pre",
        metric=static,
        readout=readout,
        last_layer_subset=True,
        progress=False,
    ).compile()
    view_bytes = layout.shape.reads * 16 * cfg.d_vocab * 4  # one [pos, d_vocab] view per read-out row
    memory = compiled.memory_analysis()
    assert memory.temp_size_in_bytes < view_bytes / 4, (memory.temp_size_in_bytes, view_bytes)
    assert eqx.is_array(metric.answer)  # the metric itself is a pytree; only its use here is whole


def test_patching_clean_everywhere_reproduces_clean_run(models, prompts):
    # Denoising resid_pre at layer 0 over all positions at once would be the clean run;
    # one position at a time, the last position's patch at the last layer is the clean
    # residual there: the metric read at the last position equals the clean run's.
    model = models["llama"]
    clean, corrupt = prompts
    metric = last_logit_diff()
    result = np.asarray(activation_patch(model, clean, corrupt, metric, "resid_post", ("layer", "pos")))
    np.testing.assert_allclose(result[-1, -1], float(metric(model(clean))), atol=1e-4)
    # A patch at a position where the prompts agree changes nothing at layer 0.
    np.testing.assert_allclose(result[0, 0], float(metric(model(corrupt))), atol=1e-4)


def test_fast_refuses_bidirectional(models, prompts):
    clean, corrupt = prompts
    with pytest.raises(PatchingError, match="causal"):
        activation_patch(models["bert"], clean, corrupt, last_logit_diff(), method="fast")


def test_metric_reading_undeclared_logits_is_an_error(models, prompts):
    clean, corrupt = prompts
    metric = logit_diff(ANSWER, WRONG)  # declares position -1 ...

    def lying(logits):  # ... but also reads position 2
        return metric(logits) + logits[2, ANSWER]

    with pytest.raises(PatchingError, match="metric.reads"):
        activation_patch(models["gpt2"], clean, corrupt, custom(lying, reads=metric.reads))


def test_labels_and_names(models, prompts):
    clean, corrupt = prompts
    words = [f"w{i}" for i in range(N_POS)]
    result = activation_patch(
        models["gpt2"],
        clean,
        corrupt,
        last_logit_diff(),
        "attn.pattern",
        ("layer", "dest", "src"),
        head=0,
        str_tokens=words,
    )
    assert result.dims == ("layer", "dest", "src")
    assert result.shape == (3, N_POS, N_POS)
    assert result.labels["dest"] == [f"{i}: w{i}" for i in range(N_POS)]
    assert result.labels["src"] == result.labels["dest"]
    assert "attn.pattern" in result.name


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(site="attn.z", over=("layer", "neuron")), "cannot be patched by 'neuron'"),
        (dict(over=("layer", "bogus")), "unknown sweep axis"),
        (dict(over=("pos",)), "include 'layer'"),
        (dict(over=("layer", "pos"), pos=2), "also sweeps"),
        (dict(site="embed"), "not a per-layer site"),
        (dict(over=("layer", "pos", "dest")), "twice"),
        (dict(site="mlp.post", over=("layer",), neuron=999), "out of range"),
        (dict(direction="sideways"), "direction"),
        (dict(method="turbo"), "method"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_requests_name_the_problem(models, prompts, kwargs, match):
    clean, corrupt = prompts
    with pytest.raises(PatchingError, match=match):
        activation_patch(models["gpt2"], clean, corrupt, last_logit_diff(), **kwargs)


def test_bad_tokens(models, prompts):
    clean, corrupt = prompts
    model = models["gpt2"]
    with pytest.raises(PatchingError, match="same length"):
        activation_patch(model, clean, corrupt[:-1], last_logit_diff())
    # A [batch, pos] batch is a dataset of pairs (tests/test_pairs.py); a batch of one is the pair.
    one = activation_patch(model, clean[None], corrupt[None], last_logit_diff(), engine="plain")
    np.testing.assert_allclose(
        one, activation_patch(model, clean, corrupt, last_logit_diff(), engine="plain"), atol=1e-6
    )
    with pytest.raises(ValueError, match="out of range"):
        activation_patch(model, clean.at[0].set(99), corrupt, last_logit_diff())


def test_sweep_matches_python_loop():
    w = jnp.asarray(np.random.default_rng(1).standard_normal((5, 3)), jnp.float32)

    def fn(loc, w):
        return {"y": jnp.tanh(w[loc["i"]] * loc["s"]).sum(), "z": w[loc["i"]] + loc["s"]}

    locs = {"i": np.array([0, 4, 2, 2, 1, 3, 0]), "s": np.linspace(-1, 1, 7).astype(np.float32)}
    expected = [fn({"i": i, "s": s}, w) for i, s in zip(locs["i"], locs["s"])]
    for batch_size in (None, 1, 3, 7, 50):
        out = sweep(fn, locs, w, batch_size=batch_size, progress=batch_size == 3)
        np.testing.assert_allclose(out["y"], [e["y"] for e in expected], rtol=1e-6)
        np.testing.assert_allclose(out["z"], np.stack([e["z"] for e in expected]), rtol=1e-6)


def test_sweep_rejects_ragged_locations():
    with pytest.raises(ValueError, match="leading"):
        sweep(lambda loc: loc["a"], {"a": np.zeros(3), "b": np.zeros(4)})


@settings(max_examples=40, deadline=None)
@given(
    n_pos=st.integers(1, 9),
    n_layers=st.integers(1, 5),
    n_chunks=st.integers(1, 6),
    max_tokens=st.integers(1, 40),
    data=st.data(),
)
def test_block_layout_invariants(n_pos, n_layers, n_chunks, max_tokens, data):
    n = data.draw(st.integers(0, 30))
    layer = np.asarray(data.draw(st.lists(st.integers(0, n_layers - 1), min_size=n, max_size=n)), np.int32)
    start = np.asarray(data.draw(st.lists(st.integers(0, n_pos - 1), min_size=n, max_size=n)), np.int32)
    fields = {f: np.full(n, -1, np.int32) for f in ("layer", "pos", "key_pos", "head", "neuron", "expert")}
    fields["pos"] = start
    layout = build_blocks(n_pos, n_layers, layer, start, fields, n_chunks, max_tokens)
    shape = layout.shape
    assert shape.tokens >= n_pos  # a row always fits one block
    # Every patch is read out exactly once.
    placed = layout.patch_of_read[layout.patch_of_read >= 0]
    assert sorted(placed.tolist()) == list(range(n))
    for c in range(layout.n_chunks):
        d = {k: v[c] for k, v in layout.data.items()}
        # Blocks are sorted by layer (the active ones are a prefix); pad blocks last.
        assert (np.diff(d["block_layer"]) >= 0).all()
        for b in range(shape.blocks):
            used = np.zeros(shape.tokens, int)
            for r in range(shape.rows):
                p, off = d["row_start"][b, r], d["row_offset"][b, r]
                t = off - n_pos
                if d["row_layer"][b, r] < 0:
                    continue
                # A real row's tokens are its positions p.., all in this block.
                assert d["row_layer"][b, r] == d["block_layer"][b]
                np.testing.assert_array_equal(d["token_pos"][b, t : t + n_pos - p], np.arange(p, n_pos))
                assert (d["token_row"][b, t : t + n_pos - p] == r).all()
                used[t : t + n_pos - p] += 1
            assert used.max(initial=0) <= 1  # rows do not overlap
            # The last row slot pads; its tokens are the unused ones.
            assert d["row_layer"][b, shape.rows - 1] == -1
            assert (d["token_row"][b][used == 0] == shape.rows - 1).all()
        for i in range(shape.reads):
            patch = layout.patch_of_read[c, i]
            b, r = d["read_block"][i], d["read_row"][i]
            if patch >= 0:
                assert d["row_start"][b, r] == start[patch] and d["row_layer"][b, r] == layer[patch]


def test_full_row_metrics_declare_reads_and_match_a_loop():
    """prob / kl_to read one position but every column; the sweep must still equal a loop."""
    import jax

    import jaxinterp as ji
    from jaxinterp.core.metrics import kl_to, prob

    cfg = ji.ModelConfig(d_model=32, n_layers=2, n_heads=4, d_head=8, d_vocab=50, n_ctx=16, d_mlp=64)
    m = ji.Transformer.init(cfg, jax.random.key(0), std=0.3)
    clean, corrupt = np.array([1, 2, 3, 4, 5, 6]), np.array([1, 2, 7, 4, 5, 6])
    _, cache = m.run_with_cache(clean, names=["resid_pre"])
    for metric in (prob(3), kl_to(m(clean))):
        assert metric.reads[1] is None
        swept = np.asarray(ji.patching.activation_patch(m, clean, corrupt, metric))
        loop = [
            [float(metric(m(corrupt, [ji.Patch("resid_pre", cache["resid_pre"], layer=l, pos=p)]))) for p in range(6)]
            for l in range(2)
        ]
        np.testing.assert_allclose(swept, loop, atol=1e-5)
