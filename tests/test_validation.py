"""No silent wrongs (issue 10): every bad input of the issue's classes raises a
`JaxinterpError` subclass naming the argument and the allowed range or type, and the
valid inputs next to them still give the right answer.

References: numpy edits of a run's cached activations (an intervention at a location is
the cached activation with those entries replaced), Python's own negative indexing, and
the tensors we write ourselves into tiny checkpoints. One tiny model per kind, one
jitted function per site (locations are traced arguments), hypothesis with few examples.
"""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import jaxinterp as ji
from jaxinterp.apps.cli import main as cli_main
from jaxinterp.causal.patching import activation_patch
from jaxinterp.causal.patching.fast import check_rows
from jaxinterp.core import metrics as M
from jaxinterp.core.errors import JaxinterpError
from jaxinterp.core.sites import site_shape
from jaxinterp.loading.tokenizer import Tokenizer

# GQA (4 query heads, 2 key/value heads), rotary, gated MLP.
CFG = ji.ModelConfig(
    d_model=16,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_head=4,
    d_vocab=32,
    n_ctx=8,
    d_mlp=16,
    positional="rotary",
    normalization="rmsnorm",
    gated_mlp=True,
    act_fn="silu",
    family="llama",
)
TOKENS = np.array([3, 1, 4, 1, 5])
N_POS = len(TOKENS)


@pytest.fixture(scope="module")
def model():
    return ji.Transformer.init(CFG, jax.random.key(0), std=0.3)


@pytest.fixture(scope="module")
def base_cache(model):
    _, cache = model.run(jnp.asarray(TOKENS), cache=frozenset(SITES))
    return {k: np.asarray(v) for k, v in cache.items()}


# -- 1. out-of-range locations --------------------------------------------------------------


@pytest.mark.parametrize(
    "iv, message",
    [
        (ji.Ablate("resid_pre", layer=2), r"layer=2 is out of range for 'resid_pre'.* 2 entries.*-2\.\.1"),
        (ji.Ablate("resid_pre", layer=-3), r"layer=-3 is out of range.*-2\.\.1"),
        (ji.Ablate("resid_pre", pos=10), r"pos=10 is out of range for 'resid_pre'.*5 entries.*-5\.\.4"),
        (ji.Ablate("attn.k", head=2), r"head=2 .*'attn.k'.*kv_head axis has 2 entries.*4 query heads, 2 key/value"),
        (ji.Ablate("attn.z", head=[0, 99]), r"head=99 is out of range for 'attn.z'.*head axis has 4 entries"),
        (ji.Ablate("mlp.post", neuron=16), r"neuron=16 is out of range for 'mlp.post'.*-16\.\.15"),
        (ji.Ablate("attn.pattern", key_pos=5), r"key_pos=5 is out of range.*-5\.\.4"),
    ],
    ids=["layer", "negative-layer", "pos", "kv-head", "head-list", "neuron", "key-pos"],
)
def test_out_of_range_location_names_field_value_and_range(model, iv, message):
    with pytest.raises(ji.InterventionError, match=message):
        model(TOKENS, [iv])


def test_out_of_range_expert():
    cfg = CFG.replace(n_experts=3, experts_per_token=2, family="mixtral")
    moe = ji.Transformer.init(cfg, jax.random.key(1))
    with pytest.raises(ji.InterventionError, match=r"expert=3 is out of range for 'mlp.post'.*-3\.\.2"):
        moe(TOKENS, [ji.Ablate("mlp.post", expert=3)])


def test_negative_indices_count_from_the_end(model):
    a = model(TOKENS, [ji.Ablate("resid_pre", layer=-1, pos=-2)])
    b = model(TOKENS, [ji.Ablate("resid_pre", layer=1, pos=N_POS - 2)])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(model(TOKENS)))  # the ablation did something


# The property test: one compiled program per site, locations traced.
SITES = ("attn.z", "attn.k", "mlp.post")
FIELDS = {"attn.z": ("pos", "head"), "attn.k": ("pos", "head"), "mlp.post": ("pos", "neuron")}


@eqx.filter_jit
def _patched(model, tokens, value, layer, a, b, site):
    f1, f2 = FIELDS[site]
    iv = ji.Patch(site, value, layer=layer, **{f1: a, f2: b})
    return model.run(tokens, [iv], cache=frozenset({site}))[1][site]


@st.composite
def locations(draw):
    """A site and (layer, first field, second field) indices, each in -n-1 .. n for an
    axis of size n: about half of the draws are valid."""
    site = draw(st.sampled_from(SITES))
    shape = site_shape(CFG, site, N_POS)  # [pos, head or kv_head or neuron, ...]
    sizes = (CFG.n_layers, shape[0], shape[1])
    return site, sizes, tuple(draw(st.integers(-n - 1, n)) for n in sizes)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=locations(), value=st.floats(-3, 3, allow_nan=False, width=32))
def test_locations_valid_match_numpy_edit_invalid_raise(model, base_cache, where, value):
    site, sizes, (layer, a, b) = where
    valid = all(-n <= i < n for i, n in zip((layer, a, b), sizes))
    f1, f2 = FIELDS[site]
    if not valid:
        with pytest.raises(JaxinterpError) as info:  # concrete locations: checked before anything runs
            model(TOKENS, [ji.Patch(site, jnp.float32(value), layer=layer, **{f1: a, f2: b})])
        assert isinstance(info.value, ji.InterventionError) and "is out of range" in str(info.value)
        return
    got = _patched(model, jnp.asarray(TOKENS), jnp.float32(value), jnp.int32(layer), jnp.int32(a), jnp.int32(b), site)
    expected = base_cache[site][layer].copy()  # numpy's indexing: negative indices count from the end
    expected[a, b] = value
    np.testing.assert_allclose(np.asarray(got)[layer], expected, rtol=1e-6, atol=1e-6)


def test_traced_out_of_range_raises_at_run_time_unless_checks_off(model):
    run = eqx.filter_jit(
        lambda m, p, checks: jax.vmap(
            lambda p: m.run(jnp.asarray(TOKENS), [ji.Ablate("resid_pre", layer=0, pos=p)], checks=checks)[0]
        )(p)
    )
    positions = jnp.array([1, 7])
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"pos index is out of range for 'resid_pre'.*-5\.\.4"):
        run(model, positions, True)
    out = run(model, positions, False)  # documented: without checks an out-of-range index selects nothing
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(model(TOKENS)), atol=1e-5)


def test_fast_engine_row_check():
    rows = {f"row_{f}": jnp.full((1, 2), -1) for f in ("pos", "head", "neuron", "key_pos", "expert")}
    data = {"row_layer": jnp.array([[0, 1]]), **rows}
    check = eqx.filter_jit(lambda d: check_rows(d, CFG, "attn.z", N_POS)["row_layer"])
    check(data)  # valid (-1: whole axis)
    with pytest.raises(eqx.EquinoxRuntimeError, match="patch location is out of range for 'attn.z'"):
        check({**data, "row_head": jnp.array([[0, 4]])}).block_until_ready()
    # The layout every sweep builds is numpy: checked on the host, naming the bad row.
    host = {k: np.asarray(v) for k, v in data.items()}
    assert check_rows(host, CFG, "attn.z", N_POS) is host
    with pytest.raises(ji.InterventionError, match=r"out of range for .attn.z.: head=4, allowed 0..3"):
        check_rows({**host, "row_head": np.array([[0, 4]])}, CFG, "attn.z", N_POS)


# -- 2. out-of-vocabulary ids; tokens of the wrong kind ------------------------------------------


def test_out_of_vocabulary_under_jit(model):
    run = eqx.filter_jit(lambda m, t: m.run(t)[0])
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"token id out of range.*d_vocab=32"):
        run(model, jnp.array([1, 40]))


@pytest.mark.parametrize(
    "tokens, message",
    [
        (5, "got the scalar 5: wrap it in a list"),
        ("hello", "got a string"),
        (np.zeros((1, 1, 2), int), r"shape \[pos\] or \[batch, pos\], got \(1, 1, 2\)"),
        (np.array([1.0, 2.0]), "must be integers, got dtype float64"),
        (np.array([1, 32]), r"token id 32 .*d_vocab=32"),
    ],
    ids=["int", "str", "rank3", "float", "oov"],
)
def test_bad_tokens(model, tokens, message):
    with pytest.raises(ji.TokenError, match=message):
        model(tokens)


def test_metric_token_ids_and_positions(model):
    logits = model(TOKENS)
    with pytest.raises(ji.MetricError, match=r"token id 40 is outside the vocabulary.*d_vocab=32"):
        M.logit_diff(40, 1)(logits)
    with pytest.raises(ji.MetricError, match=r"token id 32 .*0\.\.31"):
        M.prob(32)(logits)
    with pytest.raises(ji.MetricError, match=r"pos=5 is out of range for logits of 5 positions"):
        M.logit_diff(1, 2, pos=5)(logits)
    with pytest.raises(ji.MetricError, match="int token id"):
        M.logit_diff(1.5, 2)
    corrupt = np.array([3, 1, 2, 1, 5])
    with pytest.raises(ji.MetricError, match=r"token id\(s\) \[40, 1\] outside the vocabulary \(0\.\.31\)"):
        activation_patch(model, TOKENS, corrupt, M.logit_diff(40, 1))


def test_metric_ids_traced_in_a_sweep(model):
    run = eqx.filter_jit(lambda m, ids: jax.vmap(lambda i: M.logit_diff(i, 0)(m(TOKENS)))(ids))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"logit_diff answer: a token id is outside the vocabulary"):
        run(model, jnp.array([1, 40]))


@pytest.mark.parametrize(
    "metric, message",
    [(lambda lg: lg[-1], r"shape \(32,\)"), (lambda lg: None, "returned None")],
    ids=["vector", "none"],
)
def test_metric_must_return_a_scalar(model, metric, message):
    with pytest.raises(ji.MetricError, match=message):
        activation_patch(model, TOKENS, np.array([3, 1, 2, 1, 5]), metric, engine="plain")


# -- 4. value shapes, degenerate parameters, masks ----------------------------------------------


def test_per_layer_stack_is_read_by_rank_never_guessed(model):
    d = CFG.d_model
    stack = jnp.arange(CFG.n_layers * d, dtype=jnp.float32).reshape(CFG.n_layers, d) / 10
    # [n_layers, d_model] is a per-position value [pos, d_model]: with 5 positions it does not fit,
    # and the message spells out the stacked shape to use instead.
    with pytest.raises(ji.InterventionError, match=r"\(2, 16\).*'resid_pre'.*\(5, 16\).*\(2, 5, 16\).*\(2, 1, 16\)"):
        model(TOKENS, [ji.Add("resid_pre", stack, layer=1)])
    # The per-layer stack written [n_layers, 1, d_model] picks the layer's row.
    a = model(TOKENS, [ji.Add("resid_pre", stack[:, None, :], layer=1)])
    b = model(TOKENS, [ji.Add("resid_pre", stack[1], layer=1)])
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "value_shape, message",
    [((3, 5, 16), "first axis is not n_layers"), ((2, 2, 5, 16), "more axes than the site")],
    ids=["not-layers", "rank"],
)
def test_value_rank_mismatch(model, value_shape, message):
    with pytest.raises(ji.InterventionError, match=message):
        model(TOKENS, [ji.Patch("resid_pre", jnp.zeros(value_shape), layer=0)])


def test_per_example_values_in_a_batched_run_refused(model):
    batch = np.stack([TOKENS] * 3)
    with pytest.raises(ji.InterventionError, match=r"\(3, 5, 16\).*Per-example values in a batched run"):
        model(batch, [ji.Patch("resid_pre", jnp.zeros((3, 5, 16)), layer=0)])


def test_project_out_zero_direction():
    with pytest.raises(ji.InterventionError, match="ProjectOut on 'resid_pre': direction has zero norm"):
        ji.ProjectOut("resid_pre", jnp.zeros(16))


def test_attention_mask_of_wrong_length(model):
    with pytest.raises(ji.TokenError, match=r"attention_mask must have the shape of the tokens \(5,\), got \(4,\)"):
        model(TOKENS, attention_mask=jnp.ones(4, int))
    with pytest.raises(ji.TokenError, match=r"attention_mask must have one entry per position"):
        model.run(jnp.asarray(TOKENS), attention_mask=jnp.ones(6, int))


# -- 3. loading: dtype, missing lm_head, config.json ----------------------------------------------

LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 16,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 24,
    "vocab_size": 32,
    "max_position_embeddings": 16,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}


def llama_tensors(rng) -> dict:
    d, f, v, dh = 16, 24, 32, 4
    t = {"model.embed_tokens.weight": rng.standard_normal((v, d)), "model.norm.weight": np.ones(d)}
    t["lm_head.weight"] = rng.standard_normal((v, d))
    for i in range(2):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = rng.standard_normal((4 * dh, d))
        t[p + "self_attn.k_proj.weight"] = rng.standard_normal((2 * dh, d))
        t[p + "self_attn.v_proj.weight"] = rng.standard_normal((2 * dh, d))
        t[p + "self_attn.o_proj.weight"] = rng.standard_normal((d, 4 * dh))
        t[p + "mlp.gate_proj.weight"] = rng.standard_normal((f, d))
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((f, d))
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((d, f))
        t[p + "input_layernorm.weight"] = np.ones(d)
        t[p + "post_attention_layernorm.weight"] = np.ones(d)
    return {k: a.astype(np.float32) for k, a in t.items()}


def write_checkpoint(path, config: dict, tensors: dict):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(path / "model.safetensors"))
    return str(path)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("llama") / "m", LLAMA, llama_tensors(np.random.default_rng(0)))


def test_checkpoint_loads_with_our_tensors(llama_dir):
    m = ji.load(llama_dir)
    t = llama_tensors(np.random.default_rng(0))
    np.testing.assert_array_equal(np.asarray(m.unembed.W_U), t["lm_head.weight"].T)


@pytest.mark.parametrize("dtype", ["int8", jnp.int32, "complex64", "bool", "no-such-type"])
def test_dtype_must_be_floating(llama_dir, dtype):
    with pytest.raises(ji.ConfigError, match="dtype must be a floating dtype"):
        ji.load(llama_dir, dtype=dtype)


def test_untied_checkpoint_without_lm_head(tmp_path):
    tensors = llama_tensors(np.random.default_rng(0))
    tensors.pop("lm_head.weight")
    path = write_checkpoint(tmp_path / "untied", LLAMA, tensors)
    with pytest.raises(ji.CheckpointError, match="missing tensor 'lm_head.weight'.*tie_word_embeddings"):
        ji.load(path)
    tied = ji.load(write_checkpoint(tmp_path / "tied", {**LLAMA, "tie_word_embeddings": True}, tensors))
    np.testing.assert_array_equal(np.asarray(tied.unembed.W_U), tensors["model.embed_tokens.weight"].T)
    assert tied.cfg.tied_embeddings


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"num_attention_heads": None}, ji.ConfigError, r"\(llama\): num_attention_heads must be a positive int"),
        ({"num_attention_heads": 0}, ji.ConfigError, r"\(llama\): num_attention_heads must be positive, got 0"),
        ({"hidden_size": "16"}, ji.ConfigError, r"hidden_size must be a positive int, got '16'"),
        ({"num_attention_heads": 3}, ji.ConfigError, "hidden_size=16 is not divisible by num_attention_heads=3"),
        ({"num_key_value_heads": 3, "num_attention_heads": 4}, ji.ConfigError, "not a multiple of num_key_value"),
        (
            {"intermediate_size": 20},
            ji.CheckpointError,
            r"blocks.mlp.W_\w+ has shape \(2, 16, 24\), expected \(2, 16, 20\)",
        ),
        ({"hidden_act": "swish2"}, ji.ConfigError, r"(?s)act_fn.*'swish2'"),
    ],
    ids=["none", "zero", "str", "divisible", "kv", "width", "act"],
)
def test_bad_config_json(tmp_path, change, error, message):
    config = {k: v for k, v in {**LLAMA, **change}.items()}
    path = write_checkpoint(tmp_path / "m", config, llama_tensors(np.random.default_rng(0)))
    with pytest.raises(error, match=message):
        ji.load(path)


def test_missing_config_field(tmp_path):
    config = {k: v for k, v in LLAMA.items() if k != "vocab_size"}
    path = write_checkpoint(tmp_path / "m", config, llama_tensors(np.random.default_rng(0)))
    with pytest.raises(ji.ConfigError, match=r"config.json \(llama\) is missing the field 'vocab_size'"):
        ji.load(path)


_JUNK = st.sampled_from([None, "x", 1.5, True, 0, -1, 1, 3, 8, 10**9, [], {}, [1, 2]])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(sorted(LLAMA) + ["head_dim", "rope_scaling", "rope_theta", "sliding_window"]),
            st.one_of(st.just("delete"), _JUNK),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_config_json_fuzz_only_library_errors_escape(tmp_path_factory, edits):
    config = dict(LLAMA)
    for key, value in edits:
        if value == "delete":
            config.pop(key, None)
        else:
            config[key] = value
    path = write_checkpoint(tmp_path_factory.mktemp("fuzz") / "m", config, llama_tensors(np.random.default_rng(0)))
    try:
        ji.load(path)
    except JaxinterpError:
        pass  # what the issue asks: never a bare KeyError / TypeError / ZeroDivisionError


# -- 5. CLI and tokenizer ---------------------------------------------------------------------


@pytest.mark.parametrize("top_k", ["-5", "0", "two"])
def test_cli_top_k_must_be_positive(top_k, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["run", "no-such-model", "text", "--top-k", top_k])
    assert info.value.code == 2 and "--top-k must be" in capsys.readouterr().err


def test_cli_output_path_checked_before_the_sweep(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # The model does not exist either: the output path is checked first, before any loading.
    status = cli_main(["patch", "/no/such/model", "--clean", "a", "--corrupt", "b", "--out", str(blocker)])
    err = capsys.readouterr().err
    assert status == 1 and f"--out {str(blocker)!r} is a file" in err


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    backend = Backend(models.WordLevel({"<s>": 0, "a": 1, "b": 2, "<unk>": 3}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(backend, bos_token="<s>", unk_token="<unk>", add_bos_token=False)


def test_tokenizer_decode_checks_ids(tokenizer):
    assert tokenizer.decode([1, 2]) == "a b"
    with pytest.raises(ji.TokenizerError, match=r"token id 4 is out of range.*4 ids \(0\.\.3\)"):
        tokenizer.decode([1, 4])
    with pytest.raises(ji.TokenizerError, match="must be integers, got dtype float64"):
        tokenizer.decode([1.0, 2.0])
    with pytest.raises(ji.TokenizerError, match="out of range"):
        tokenizer.to_str_tokens(np.array([-1]))
    # Ids off a model's padded logits: opt in to a placeholder text.
    assert tokenizer.decode([1, 2, 7, 1], unknown="?") == "a b?a"


def test_tokenizer_prepend_bos_must_be_a_bool(tokenizer):
    assert tokenizer.encode("a b", prepend_bos=True) == [0, 1, 2]
    with pytest.raises(ji.TokenizerError, match=r"prepend_bos must be True, False or None .*got 'no'"):
        tokenizer.encode("a b", prepend_bos="no")
