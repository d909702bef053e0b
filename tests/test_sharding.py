"""Model-sharded weights (jaxinterp.model.sharding).

In this process (one device): the logical axes of every parameter agree with the model's
own jaxtyping annotations (a second source we do not compute), and the axis rules give
the specs the rules ask for (hand-written expectations), with clear errors.

In a subprocess with 8 virtual CPU devices (the device count is fixed when JAX starts):
a hand-written Llama checkpoint loaded onto a 2x4 (data x model) mesh has every weight
on the sharding the rules ask for, with no device holding a whole sharded weight, and
equals the unsharded load bit for bit (fp32 and bf16); a head sweep on the 2x4 mesh
equals the unsharded sweep and a Python loop of forward passes, leaves the program
sharded over "data", and the compiled program gathers no weight; `activation_patch`
with the mesh equals the one-device numbers (plain and fast engines).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing

import jax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

import jaxinterp as ji
from jaxinterp.core.errors import ShardingError
from jaxinterp.model.sharding import DEFAULT_RULES, param_dims, param_specs

BASE = dict(d_model=16, n_layers=2, n_heads=4, d_head=4, d_vocab=32, n_ctx=8, d_mlp=32)
CONFIGS = {
    "gpt2-like": dict(qkv_bias=True, o_bias=True, mlp_bias=True, unembed_bias=True),
    "llama-like": dict(
        n_kv_heads=2, normalization="rmsnorm", positional="rotary", gated_mlp=True, act_fn="silu", qk_norm="head"
    ),
    "moe": dict(n_experts=4, experts_per_token=2, gated_mlp=True, act_fn="silu", post_attn_norm=True),
    "bert-like": dict(causal=False, post_norm=True, embed_norm=True, n_token_types=2, qk_norm="none"),
    "olmo2-like": dict(pre_norm=False, post_attn_norm=True, post_mlp_norm=True, qk_norm="projection"),
}
MESH = AbstractMesh((2, 4), ("data", "model"))


def _annotation_dims(model, name: str) -> tuple[str, ...]:
    """The dims the model's own annotation gives the leaf at ``name`` (``*layer`` -> layer)."""
    *owner_path, field = name.split(".")
    owner = model
    for part in owner_path:
        owner = getattr(owner, part)
    hint = typing.get_type_hints(type(owner))[field]
    if typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    dims = tuple(d.lstrip("*") for d in hint.dim_str.split())
    return dims if owner_path[0] == "blocks" else tuple(d for d in dims if d != "layer")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logical_axes_agree_with_the_model_annotations(name):
    cfg = ji.ModelConfig(**{**BASE, **CONFIGS[name]})
    model = jax.eval_shape(lambda: ji.Transformer.init(cfg, jax.random.key(0)))
    dims = param_dims(cfg)
    for param, axes in dims.items():
        from_annotation = _annotation_dims(model, param)
        if axes[-1] == "norm":  # norm weights: one width, whatever it is called
            assert len(axes) == len(from_annotation), param
        else:
            assert axes == from_annotation, (param, axes, from_annotation)
    assert any(a.startswith("blocks.attn.W_") for a in dims)


def test_default_rules_split_heads_neurons_experts_and_vocabulary():
    cfg = ji.ModelConfig(**{**BASE, "n_kv_heads": 2, "gated_mlp": True, "act_fn": "silu", "n_heads": 8, "d_head": 2})
    specs = param_specs(cfg, MESH)
    M = "model"
    assert specs["blocks.attn.W_Q"] == PartitionSpec(None, M, None, None)
    assert specs["blocks.attn.W_O"] == PartitionSpec(None, M, None, None)
    assert specs["blocks.attn.W_K"] == PartitionSpec(None, None, None, None)  # 2 kv heads on 4 devices: whole
    assert specs["blocks.mlp.W_gate"] == specs["blocks.mlp.W_in"] == PartitionSpec(None, None, M)
    assert specs["blocks.mlp.W_out"] == PartitionSpec(None, M, None)
    assert specs["embed.W_E"] == PartitionSpec(M, None)
    assert specs["unembed.W_U"] == PartitionSpec(None, M)
    assert all(s == PartitionSpec(*([None] * len(s))) for n, s in specs.items() if "ln" in n)

    moe = ji.ModelConfig(**{**BASE, "n_experts": 4, "experts_per_token": 2, "gated_mlp": True, "act_fn": "silu"})
    specs = param_specs(moe, MESH)
    # The experts take the model axis; the neurons cannot take it a second time.
    assert specs["blocks.mlp.W_in"] == PartitionSpec(None, M, None, None)
    assert specs["blocks.mlp.W_router"] == PartitionSpec(None, None, M)


def test_custom_rules_and_first_free_rule_wins():
    cfg = ji.ModelConfig(**BASE)
    rules = [("d_model", "data"), ("d_mlp", "model"), ("head", "data"), ("head", "model")]
    specs = param_specs(cfg, MESH, rules)
    # W_in: d_model on data, d_mlp on model.
    assert specs["blocks.mlp.W_in"] == PartitionSpec(None, "data", "model")
    # W_Q (layer, head, d_model, d_head): head takes data first, so d_model finds data used.
    assert specs["blocks.attn.W_Q"] == PartitionSpec(None, "data", None, None)
    # No rule for d_vocab: the embedding splits only its d_model.
    assert specs["embed.W_E"] == PartitionSpec(None, "data")
    assert param_specs(cfg, MESH, ())["blocks.mlp.W_in"] == PartitionSpec(None, None, None)


@pytest.mark.parametrize(
    "rules, match",
    [
        ([("heads", "model")], "unknown logical axis 'heads'"),
        ([("head", "tensor")], "'tensor' is not an axis of the mesh"),
        ([("head",)], r"\(logical axis, mesh axis or None\) pair"),
        ("head", "sequence of"),
    ],
)
def test_bad_rules_name_the_problem(rules, match):
    with pytest.raises(ShardingError, match=match):
        param_specs(ji.ModelConfig(**BASE), MESH, rules)


def test_make_mesh_refuses_more_devices_than_there_are():
    from jaxinterp.model.sharding import make_mesh

    with pytest.raises(ShardingError, match="needs 16 devices"):
        make_mesh(4, 4)
    assert make_mesh(1).axis_names == ("data", "model")
    assert DEFAULT_RULES[0] == ("head", "model")


SCRIPT = textwrap.dedent(
    """
    import json, os, re, sys
    import jax, jax.numpy as jnp, numpy as np
    from safetensors.numpy import save_file
    import jaxinterp as ji
    from jaxinterp.core.metrics import logit_diff
    from jaxinterp.engine.sweep import chunk_locations, place_on_mesh, run_chunks, sweep
    from jaxinterp.model.sharding import make_mesh, param_specs, shard_model

    assert len(jax.devices()) == 8, jax.devices()
    # A hand-written Llama checkpoint (HF layout): 8 query heads, 4 key/value heads.
    L, D, H, K, dh, F, V = 2, 32, 8, 4, 4, 64, 64
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, D)), "model.norm.weight": 1 + rng.normal(0, 0.1, D),
         "lm_head.weight": rng.normal(0, 0.5, (V, D))}
    for i in range(L):
        p = f"model.layers.{i}."
        t |= {p + "self_attn.q_proj.weight": rng.normal(0, 0.3, (H * dh, D)),
              p + "self_attn.k_proj.weight": rng.normal(0, 0.3, (K * dh, D)),
              p + "self_attn.v_proj.weight": rng.normal(0, 0.3, (K * dh, D)),
              p + "self_attn.o_proj.weight": rng.normal(0, 0.3, (D, H * dh)),
              p + "mlp.gate_proj.weight": rng.normal(0, 0.3, (F, D)), p + "mlp.up_proj.weight": rng.normal(0, 0.3, (F, D)),
              p + "mlp.down_proj.weight": rng.normal(0, 0.3, (D, F)),
              p + "input_layernorm.weight": 1 + rng.normal(0, 0.1, D),
              p + "post_attention_layernorm.weight": 1 + rng.normal(0, 0.1, D)}
    path = sys.argv[1]
    os.makedirs(path, exist_ok=True)
    save_file({k: v.astype(np.float32) for k, v in t.items()}, os.path.join(path, "model.safetensors"))
    json.dump(dict(model_type="llama", vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                   num_attention_heads=H, num_key_value_heads=K, max_position_embeddings=16, rms_norm_eps=1e-5,
                   tie_word_embeddings=False, hidden_act="silu"), open(os.path.join(path, "config.json"), "w"))

    # jax.make_mesh gives explicit axes: jaxinterp runs them as automatic ones.
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    plain = ji.load(path)
    sharded = ji.load(path, mesh=mesh)
    specs = param_specs(plain.cfg, mesh)
    leaves = jax.tree_util.tree_leaves_with_path(sharded)
    names = {".".join(str(getattr(k, "name", k)) for k in p): x for p, x in leaves}
    n_split = 0
    for name, spec in specs.items():
        x = names[name]
        # The sharding the rules ask for, on the 2x4 mesh.
        assert x.sharding.mesh.shape == {"data": 2, "model": 4} and x.sharding.spec == spec, (name, x.sharding)
        if "model" in spec:
            n_split += 1
            dim = list(spec).index("model")
            for shard in x.addressable_shards:  # no device holds the whole weight
                assert shard.data.shape[dim] == x.shape[dim] // 4, (name, shard.data.shape, x.shape)
            assert len({s.device for s in x.addressable_shards}) == 8
    assert n_split == 9, n_split  # W_E, W_U, and per layer-stack W_Q, W_K, W_V, W_O, W_gate, W_in, W_out
    # Bit for bit the unsharded load, in float32 and bfloat16.
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(sharded)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    bf = ji.load(path, jnp.bfloat16, mesh=mesh)
    for a, b in zip(jax.tree_util.tree_leaves(ji.load(path, jnp.bfloat16)), jax.tree_util.tree_leaves(bf)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    # shard_model places an in-memory model the same way.
    moved = shard_model(plain, make_mesh(data=2, model=4))
    for a, b in zip(jax.tree_util.tree_leaves(moved), jax.tree_util.tree_leaves(sharded)):
        assert a.sharding.spec == b.sharding.spec and np.array_equal(np.asarray(a), np.asarray(b))

    # A head sweep (attn.z at every layer, position, head) on the 2x4 mesh.
    clean, corrupt = np.array([3, 14, 15, 9, 26, 5]), np.array([3, 14, 27, 9, 26, 5])
    _, cache = plain.run_with_cache(clean, names=["attn.z"])
    ll, pp, hh = np.meshgrid(np.arange(L), np.arange(6), np.arange(H), indexing="ij")
    locs = {"layer": ll.ravel(), "pos": pp.ravel(), "head": hh.ravel()}

    def fn(loc, model, z, tokens):
        logits, _ = model.forward(tokens, [ji.Patch("attn.z", z, layer=loc["layer"], pos=loc["pos"], head=loc["head"])])
        return logits[-1, 7] - logits[-1, 11]

    z, tokens = cache["attn.z"], jnp.asarray(corrupt)
    on_mesh = sweep(fn, locs, sharded, z, tokens, batch_size=16, mesh=mesh)
    one_device = sweep(fn, locs, plain, z, tokens, batch_size=16)
    one = jax.jit(fn)  # one patch per call: a loop of single forward passes, compiled once
    loop = [float(one({"layer": a, "pos": b, "head": c}, plain, z, tokens)) for a, b, c in zip(*locs.values())]
    np.testing.assert_allclose(np.asarray(on_mesh), np.asarray(one_device), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(on_mesh), loop, rtol=1e-5, atol=1e-5)
    assert on_mesh.sharding.spec == jax.sharding.PartitionSpec("data"), on_mesh.sharding
    assert {s.index[0].start for s in on_mesh.addressable_shards} == {0, 48}  # two halves over "data"
    # The compiled sweep never gathers a weight (tensor-parallel: all-reduces only).
    chunks, _ = chunk_locations(locs, 16, multiple_of=2)
    chunks, ops = place_on_mesh(chunks, (sharded, z, tokens), mesh, "data")
    hlo = run_chunks.lower(fn, chunks, ops, False).lowered.compile().as_text()
    print("all-gather", hlo.count("all-gather("), "all-reduce", hlo.count("all-reduce("))
    assert hlo.count("all-gather(") == 0 and hlo.count("all-reduce(") > 0

    # activation_patch with the mesh: the loop's numbers (auto takes the plain engine, which
    # keeps the weights sharded; fast gathers them in its per-device program).
    metric = logit_diff(7, 11)
    ref = np.reshape(loop, (L, 6, H))
    for method in ("auto", "fast"):
        got = ji.patching.activation_patch(sharded, clean, corrupt, metric, "attn.z", ("layer", "pos", "head"),
                                           mesh=mesh, method=method)
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5, err_msg=method)
    print("OK")
    """
)


def test_weights_sharded_and_sweep_on_a_2x4_mesh_equals_unsharded(tmp_path):
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "llama")], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert out.stdout.strip().endswith("OK"), out.stdout
