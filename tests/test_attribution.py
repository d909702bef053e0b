"""Attribution patching and edge attribution against references computed independently:

- the first-order quantity of each single patch, by forward-mode differentiation
  (`jax.jvp`) through an explicit `Patch` at that one location, in a Python loop;
- exact activation patching where the metric is linear in the patched activation;
- the completeness axiom of integrated gradients;
- edge scores against a brute-force loop that perturbs one reader's input at a time
  with an `Fn` intervention and a hand-written norm.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import Add, Fn, ModelConfig, Patch, Transformer
from jaxinterp.causal.attribution import attribution_patch, edge_attribution_patch, graph_nodes, valid_edges
from jaxinterp.causal.attribution.cost import attribution_cost, matmul_flops
from jaxinterp.core.metrics import logit_diff
from jaxinterp.core.sites import SiteError

LLAMA = ModelConfig(
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_head=8,
    d_mlp=48,
    d_vocab=50,
    n_ctx=16,
    act_fn="silu",
    normalization="rmsnorm",
    positional="rotary",
    gated_mlp=True,
    family="llama",
)
# Parallel attention+MLP, LayerNorm with biases, learned positions, MHA.
NEOX = ModelConfig(
    d_model=24,
    n_layers=2,
    n_heads=3,
    d_head=8,
    d_mlp=32,
    d_vocab=50,
    n_ctx=16,
    act_fn="gelu",
    parallel_attn_mlp=True,
    qkv_bias=True,
    o_bias=True,
    mlp_bias=True,
    family="neox",
)
CLEAN = jnp.array([1, 5, 7, 9, 3, 11])
CORRUPT = jnp.array([1, 5, 8, 9, 2, 11])
METRIC = logit_diff(4, 6)


def tiny_model(cfg, seed, std=0.3):
    """A model with random weights drawn by numpy: ``Transformer.init`` draws with
    jax.random, which compiles one threefry program per weight shape (~1-2 s each on
    these CPUs). Norm weights ~1 + N(0, 0.2^2), every other float ~N(0, std^2), biases
    included, so that every term of the norms and projections matters."""
    shapes = eqx.filter_eval_shape(Transformer.init, cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if not jnp.issubdtype(leaf.dtype, jnp.floating):  # the per-layer attention windows
            return jnp.asarray(cfg.windows, leaf.dtype)
        x = rng.normal(size=leaf.shape)
        x = 1 + 0.2 * x if getattr(path[-1], "name", None) == "w" else std * x
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def llama():
    return tiny_model(LLAMA, 0)


@pytest.fixture(scope="module")
def neox():
    return tiny_model(NEOX, 1)


# --------------------------------------------------------- first-order reference


def _first_order(model, site, base, target, metric, caches):
    """``derivative(**where)``: d/dt metric(base run with the activation at ``where``
    moved t of the way to the target run's) at t = 0. Forward mode through one explicit
    Patch: nothing shared with the reverse-mode code under test. Compiled once per site;
    the location fields are traced. ``caches``: the base and target runs' caches."""
    a0, a1 = caches[0][site], caches[1][site]

    @jax.jit
    def derivative(where):
        f = lambda t: metric(model.forward(base, [Patch(site, a0 + t * (a1 - a0), **where)])[0])
        return jax.jvp(f, (0.0,), (1.0,))[1]

    return lambda **where: derivative({k: jnp.asarray(v) for k, v in where.items()})


# (site, result axes) -> the location fields of a Patch that patches one result entry.
CASES = [
    ("resid_pre", ("layer", "pos")),
    ("attn.z", ("layer", "head")),
    ("attn.k", ("layer", "kv_head")),
    ("attn.pattern", ("layer", "head")),
    ("mlp.post", ("layer", "neuron")),
    ("mlp_out", ("layer", "pos")),
    ("embed", ("pos",)),
]
_FIELD = {"layer": "layer", "pos": "pos", "head": "head", "kv_head": "head", "neuron": "neuron"}


SITES = [s for s, _ in CASES]


@pytest.fixture(scope="module")
def llama_all_sites(llama):
    return attribution_patch(llama, CLEAN, CORRUPT, METRIC, sites=SITES)


@pytest.fixture(scope="module")
def llama_caches(llama):
    """(corrupted cache, clean cache) of every site in CASES."""
    return llama.run_with_cache(CORRUPT, names=SITES)[1], llama.run_with_cache(CLEAN, names=SITES)[1]


@pytest.mark.parametrize("site,dims", CASES, ids=[c[0] for c in CASES])
def test_attribution_equals_first_order_patch_loop(llama, llama_all_sites, llama_caches, site, dims):
    result = llama_all_sites[site]
    assert result.dims == dims
    got = np.asarray(result)
    # Loop over every entry (neurons: a sample of them, to keep the test quick).
    entries = list(np.ndindex(got.shape))
    if site == "mlp.post":
        entries = entries[:: max(1, len(entries) // 12)]
    derivative = _first_order(llama, site, CORRUPT, CLEAN, METRIC, llama_caches)
    for idx in entries:
        want = derivative(**{_FIELD[d]: i for d, i in zip(dims, idx)})
        np.testing.assert_allclose(got[idx], want, rtol=1e-4, atol=1e-5, err_msg=f"{site} at {idx}")
    assert np.abs(got).max() > 1e-3  # the comparison is not between zeros


def test_noising_direction_and_per_position(llama, llama_caches):
    # The same sites as the shared fixture, so the compiled program is reused.
    res = attribution_patch(llama, CLEAN, CORRUPT, METRIC, sites=SITES, per_position=True, direction="noising")[
        "attn.z"
    ]
    assert res.dims == ("layer", "pos", "head")
    got = np.asarray(res)
    derivative = _first_order(llama, "attn.z", CLEAN, CORRUPT, METRIC, llama_caches[::-1])
    for idx in [(0, 2, 1), (1, 4, 3), (1, 2, 0), (0, 5, 2)]:
        l, p, h = idx
        want = derivative(layer=l, pos=p, head=h)
        np.testing.assert_allclose(got[idx], want, rtol=1e-4, atol=1e-5)


def test_full_name_and_over(llama, llama_all_sites):
    sites = ["blocks.1.attn.hook_z" if s == "attn.z" else s for s in SITES]  # same program as the fixture's
    res = attribution_patch(llama, CLEAN, CORRUPT, METRIC, sites=sites, over={"resid_pre": ("layer",)})
    np.testing.assert_allclose(
        np.asarray(res["blocks.1.attn.hook_z"]), np.asarray(llama_all_sites["attn.z"])[1], rtol=1e-5, atol=1e-6
    )
    assert res["resid_pre"].dims == ("layer",)
    np.testing.assert_allclose(
        np.asarray(res["resid_pre"]), np.asarray(llama_all_sites["resid_pre"]).sum(1), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------------- exact where linear


def test_exact_where_metric_is_linear_in_the_site():
    # ln_final.normalized feeds the logits linearly, and logit_diff is linear in the
    # logits: first order is exact, so attribution == activation patching.
    # In a 1-layer attention-only model whose final norm is made linear (a huge eps
    # makes the RMS divisor a constant), attn.z feeds the metric linearly too.
    cfg = ModelConfig(
        d_model=32,
        n_layers=1,
        n_heads=4,
        d_head=8,
        d_vocab=50,
        n_ctx=16,
        attn_only=True,
        normalization="rmsnorm",
        positional="rotary",
        norm_eps=1e8,
    )
    model = tiny_model(cfg, 7)
    # O(1) values and logits despite the 1e4 RMS divisors.
    model = eqx.tree_at(
        lambda m: (m.unembed.W_U, m.blocks.attn.W_V), model, (model.unembed.W_U * 1e4, model.blocks.attn.W_V * 1e4)
    )
    res = attribution_patch(model, CLEAN, CORRUPT, METRIC, sites=["attn.z", "ln_final.normalized"])
    _, clean_cache = model.run_with_cache(CLEAN)
    base = METRIC(model(CORRUPT))

    @eqx.filter_jit
    def patched(site, value, **where):
        return METRIC(model.forward(CORRUPT, [Patch(site, value, **where)])[0]) - base

    z = np.asarray(res["attn.z"])
    for h in range(cfg.n_heads):
        want = patched("attn.z", clean_cache["attn.z"], layer=jnp.asarray(0), head=jnp.asarray(h))
        np.testing.assert_allclose(z[0, h], want, rtol=1e-4, atol=1e-6)
    assert np.abs(z).max() > 1e-2
    normed = np.asarray(res["ln_final.normalized"])
    for p in range(CLEAN.shape[0]):
        want = patched("ln_final.normalized", clean_cache["ln_final.normalized"], pos=jnp.asarray(p))
        np.testing.assert_allclose(normed[p], want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------ integrated gradients


N_IG = 32


@pytest.fixture(scope="module")
def llama_ig(llama):
    return attribution_patch(llama, CLEAN, CORRUPT, METRIC, sites=SITES, method="ig", n_steps=N_IG)


def test_ig_completeness_at_the_embeddings(llama, llama_ig, llama_all_sites):
    # Integrated gradients along the embeddings sum to the total change of the metric.
    res = llama_ig
    total = float(METRIC(llama(CLEAN)) - METRIC(llama(CORRUPT)))
    assert abs(total) > 0.1
    np.testing.assert_allclose(np.asarray(res["embed"]).sum(), total, rtol=1e-2)
    # Plain attribution patching does not satisfy completeness on this nonlinear model.
    assert abs(np.asarray(llama_all_sites["embed"]).sum() - total) > 1e-2 * abs(total)


def test_ig_equals_loop_over_steps(llama, llama_ig):
    n = N_IG
    res = np.asarray(llama_ig["resid_pre"])
    _, c0 = llama.run_with_cache(CORRUPT, names=["embed", "resid_pre"])
    _, c1 = llama.run_with_cache(CLEAN, names=["embed", "resid_pre"])
    diff = c1["resid_pre"] - c0["resid_pre"]

    @jax.jit
    def directional(alpha, layer, pos):
        emb = c0["embed"] + alpha * (c1["embed"] - c0["embed"])
        f = lambda t: METRIC(
            llama.forward(CORRUPT, [Patch("embed", emb), Add("resid_pre", t * diff, layer=layer, pos=pos)])[0]
        )
        return jax.jvp(f, (0.0,), (1.0,))[1]

    for l, p in [(0, 2), (1, 4)]:
        want = np.mean([directional((k + 0.5) / n, l, p) for k in range(n)])
        np.testing.assert_allclose(res[l, p], want, rtol=1e-4, atol=1e-5)


def test_batch_is_mean_of_examples(llama):
    clean = jnp.stack([CLEAN, CLEAN[::-1]])
    corrupt = jnp.stack([CORRUPT, CORRUPT[::-1]])
    batched = attribution_patch(llama, clean, corrupt, METRIC, sites=SITES)["attn.z"]
    singles = [
        np.asarray(attribution_patch(llama, a, b, METRIC, sites=SITES)["attn.z"]) for a, b in zip(clean, corrupt)
    ]
    np.testing.assert_allclose(np.asarray(batched), np.mean(singles, 0), rtol=1e-5, atol=1e-6)


def test_bad_inputs(llama):
    with pytest.raises(ValueError, match="same shape"):
        attribution_patch(llama, CLEAN, CORRUPT[:-1], METRIC)
    with pytest.raises(SiteError, match="attn.z"):
        attribution_patch(llama, CLEAN, CORRUPT, METRIC, sites=["attn.zz"])
    with pytest.raises(ValueError, match="axes"):
        attribution_patch(llama, CLEAN, CORRUPT, METRIC, sites=["attn.z"], over={"attn.z": ("layer", "d_model")})
    with pytest.raises(ValueError, match="method"):
        attribution_patch(llama, CLEAN, CORRUPT, METRIC, method="sgd")
    with pytest.raises(ValueError, match="direction"):
        attribution_patch(llama, CLEAN, CORRUPT, METRIC, direction="sideways")


# ------------------------------------------------------------------ edge attribution


def _norm(cfg, w, b, x):
    # Written out here, independently of jaxinterp.model.norms.
    if cfg.normalization == "layernorm":
        x = x - x.mean(-1, keepdims=True)
    y = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + cfg.norm_eps) * w
    return y if b is None else y + b


class BruteForceEdges:
    """score[u, d] = d/dt metric(run with only d's input moved by t * delta_u), where
    delta_u = out_u(target) - out_u(base) and the run is the base run with its token
    embeddings replaced by ``embed`` (the base run's own, or an integrated-gradients
    step). One compiled derivative per reader kind, shared by every call."""

    def __init__(self, model, base, target, metric):
        cfg = self.cfg = model.cfg
        self.model, self.base = model, base
        names = ["embed", "resid_pre", "attn.z", "mlp_out"] + ([] if cfg.parallel_attn_mlp else ["resid_mid"])
        self.run_cache = jax.jit(lambda emb: model.forward(base, [Patch("embed", emb)], frozenset(names))[1])
        self.c0 = model.run_with_cache(base, names=names)[1]
        self.c1 = model.run_with_cache(target, names=names)[1]
        B, attn = model.blocks, model.blocks.attn
        sel = lambda a, l: None if a is None else a[l]

        def qkv_fn(x, args):
            # On q/k/v: add proj(norm(resid + t*delta)) - proj(norm(resid)); the Fn's head
            # mask keeps only the reader's head.
            t, delta, resid, w, b, W, bias = args
            proj = lambda r: jnp.einsum("pm,hmd->phd", _norm(cfg, w, b, r), W) + (0 if bias is None else bias)
            return x + proj(resid + t * delta) - proj(resid)

        def mlp_fn(x, args):
            t, delta, resid, w, b = args
            return x + _norm(cfg, w, b, resid + t * delta) - _norm(cfg, w, b, resid)

        proj = {
            "q": ("attn.q", attn.W_Q, attn.b_Q),
            "k": ("attn.k", attn.W_K, attn.b_K),
            "v": ("attn.v", attn.W_V, attn.b_V),
        }

        kinds = ("q", "k", "v", "mlp", "logits")

        def reader_ivs(t, layer, index, delta, resid):
            # One perturbation per reader kind, each scaled by its entry of the one-hot
            # `t`: a single compiled program serves every edge.
            ivs = [Add("resid_post", t[4] * delta, layer=cfg.n_layers - 1)]
            if cfg.has_mlp:
                ivs.append(
                    Fn("ln2.normalized", mlp_fn, (t[3], delta, resid, B.ln2.w[layer], sel(B.ln2.b, layer)), layer=layer)
                )
            for i, kind in enumerate("qkv"):
                site, W, bias = proj[kind]
                args = (t[i], delta, resid, B.ln1.w[layer], sel(B.ln1.b, layer), W[layer], sel(bias, layer))
                # `index` is a query head for q readers; the k/v perturbations of such an edge
                # are scaled by 0, but their head must still exist (GQA: fewer kv heads), or the
                # location check refuses it.
                head = index if kind == "q" else jnp.minimum(index, cfg.n_kv_heads - 1)
                ivs.append(Fn(site, qkv_fn, args, layer=layer, head=head))
            return ivs

        @jax.jit
        def derivative(onehot, layer, index, delta, resid, emb):
            f = lambda t: metric(
                model.forward(base, [Patch("embed", emb)] + reader_ivs(t * onehot, layer, index, delta, resid))[0]
            )
            return jax.jvp(f, (0.0,), (1.0,))[1]

        self.onehot = {k: jnp.eye(len(kinds))[i] for i, k in enumerate(kinds)}
        self.derivative = derivative

    def _out(self, cache, node):
        if node.kind == "embed":
            return cache["resid_pre"][0]
        if node.kind == "mlp":
            return cache["mlp_out"][node.layer]
        return cache["attn.z"][node.layer][:, node.index] @ self.model.blocks.attn.W_O[node.layer, node.index]

    def scores(self, embed=None, every: int = 1):
        """Scores of every edge (``every=k``: of every k-th edge, the rest NaN)."""
        cfg = self.cfg
        embed = self.c0["embed"] if embed is None else embed
        run = self.run_cache(embed)
        up, down = graph_nodes(cfg)
        valid = valid_edges(cfg)
        scores = np.zeros(valid.shape)
        count = 0
        for i, u in enumerate(up):
            delta = self._out(self.c1, u) - self._out(self.c0, u)
            for j, d in enumerate(down):
                if not valid[i, j]:
                    continue
                count += 1
                if count % every:
                    scores[i, j] = np.nan
                    continue
                kind = d.input or d.kind
                if kind == "mlp":
                    resid = (run["resid_pre"] if cfg.parallel_attn_mlp else run["resid_mid"])[d.layer]
                else:
                    resid = run["resid_pre"][0 if d.layer is None else d.layer]
                scores[i, j] = self.derivative(self.onehot[kind], d.layer or 0, d.index or 0, delta, resid, embed)
        return scores


@pytest.fixture(scope="module")
def llama_brute(llama):
    return BruteForceEdges(llama, CORRUPT, CLEAN, METRIC)


@pytest.mark.parametrize("which", ["llama", "neox"])
def test_eap_equals_brute_force_edge_loop(which, request):
    model = request.getfixturevalue(which)
    eap = edge_attribution_patch(model, CLEAN, CORRUPT, METRIC)
    brute = (
        request.getfixturevalue("llama_brute") if which == "llama" else BruteForceEdges(model, CORRUPT, CLEAN, METRIC)
    )
    want = brute.scores()
    got = np.asarray(eap)
    assert got.shape == want.shape == eap.valid.shape
    assert np.all(got[~eap.valid] == 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want).max() > 1e-2
    if model.cfg.n_kv_heads < model.cfg.n_heads:  # GQA: keys and values are read by key/value heads
        assert "a1.kv1.k" in eap.downstream and "a1.h3.q" in eap.downstream


def test_eap_ig_equals_loop_over_steps(llama, llama_brute):
    n = 2
    got = np.asarray(edge_attribution_patch(llama, CLEAN, CORRUPT, METRIC, method="ig", n_steps=n))
    e0, e1 = llama_brute.c0["embed"], llama_brute.c1["embed"]
    want = np.mean([llama_brute.scores(e0 + (k + 0.5) / n * (e1 - e0), every=3) for k in range(n)], 0)
    checked = ~np.isnan(want)
    assert checked.sum() > 20
    np.testing.assert_allclose(got[checked], want[checked], rtol=1e-4, atol=1e-5)


def test_top_edges_and_circuit(llama):
    eap = edge_attribution_patch(llama, CLEAN, CORRUPT, METRIC)
    vals = np.where(eap.valid, np.asarray(eap), np.nan)
    order = np.argsort(-np.nan_to_num(np.abs(vals), nan=-1), axis=None)[:5]
    top = eap.top_edges(5)
    assert [(e.upstream, e.downstream) for e in top] == [
        (eap.upstream[i], eap.downstream[j]) for i, j in zip(*np.unravel_index(order, vals.shape))
    ]
    assert all(eap.score(e.upstream, e.downstream) == e.score for e in top)
    circuit = eap.circuit(threshold=abs(top[4].score))
    assert len(circuit.edges) == 5
    nodes = set(circuit.nodes)
    assert all(e.upstream in nodes for e in top)
    assert not any(n.endswith((".q", ".k", ".v")) for n in nodes)
    with pytest.raises(KeyError, match="does not feed"):
        eap.score("m1", "a0.h0.q")


def test_eap_rejects_post_norm_models():
    cfg = ModelConfig(
        d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=16, d_vocab=20, n_ctx=8, post_norm=True, causal=False
    )
    model = eqx.filter_eval_shape(Transformer.init, cfg, jax.random.PRNGKey(0))  # shapes only: the check comes first
    with pytest.raises(NotImplementedError, match="pre-norm"):
        edge_attribution_patch(model, CLEAN[:4] % 20, CORRUPT[:4] % 20, METRIC)


# ---------------------------------------------------------------------------- cost


def test_matmul_flop_count_matches_hand_count(llama):
    c, n = LLAMA, CLEAN.shape[0]
    per_token = (
        c.d_model * (c.n_heads + 2 * c.n_kv_heads) * c.d_head
        + c.n_heads * c.d_head * c.d_model
        + 3 * c.d_model * c.d_mlp
    )
    attention = 2 * n * n * c.n_heads * c.d_head  # scores and pattern @ v
    hand = c.n_layers * (2 * n * per_token + 2 * attention) + 2 * n * c.d_model * c.d_vocab
    assert matmul_flops(lambda m, t: m.forward(t)[0], llama, CLEAN) == hand
    # A full Patch of every MLP's output makes the MLPs dead code (XLA drops them): not counted.
    mlps = c.n_layers * 2 * n * 3 * c.d_model * c.d_mlp
    frozen = jnp.zeros((c.n_layers, n, c.d_model))
    assert matmul_flops(lambda m, t: m.forward(t, [Patch("mlp_out", frozen)])[0], llama, CLEAN) == hand - mlps
    # At one layer only (a located Patch selects): every MLP still runs.
    one = [Patch("mlp_out", frozen, layer=1)]
    assert matmul_flops(lambda m, t: m.forward(t, one)[0], llama, CLEAN) == hand


def test_attribution_costs_at_most_three_forward_passes(llama):
    # Clean cache run + corrupted forward + backward (activations only), whatever the
    # number of sites: the budget.
    for sites in (["resid_pre", "attn.z"], "all"):
        cost = attribution_cost(llama, CLEAN, CORRUPT, METRIC, sites=sites)
        assert cost["forward_passes"] <= 3.0, (sites, cost)
    ig = attribution_cost(llama, CLEAN, CORRUPT, METRIC, method="ig", n_steps=4)
    assert 3.0 < ig["forward_passes"] <= 2 + 4 * 2.0
