"""The command line and the demo, on a tiny random GPT-2 saved as an HF directory with a
word-level tokenizer. References: the same model in transformers + torch (top tokens,
activation patching with torch hooks, logit differences), and the sites table of
`jaxinterp.core.sites` (shapes computed here from the config).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hf_models import hf_model

from jaxinterp.apps.cli import main, site_meanings
from jaxinterp.core.sites import layer_site_dims, top_level_site_dims

WORDS = (
    "When Mary and John went to the store , gave a drink park ball office book I think that weather today is "
    "good bad great terrible nice awful"
).split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(torch_model, model_dir, tokenizer)``: the tiny GPT-2 with a tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch_model, saved = hf_model("gpt2")
    path = tmp_path_factory.mktemp("cli") / "gpt2"
    shutil.copytree(saved, path)  # the shared fixture dir stays tokenizer-free
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}}
    assert len(vocab) <= torch_model.config.vocab_size
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    import jaxinterp

    return torch_model, str(path), jaxinterp.load_tokenizer(str(path))


def torch_logits(torch_model, ids):
    import torch

    with torch.no_grad():
        return torch_model(torch.tensor([list(ids)])).logits[0].double().numpy()


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- info


def test_info_lists_every_site_with_its_shape(capsys, tiny):
    torch_model, path, _ = tiny
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    hf = torch_model.config
    assert f"n_layers={hf.n_layer}" in out and f"d_model={hf.n_embd}" in out and f"d_vocab={hf.vocab_size}" in out
    n_params = sum(p.numel() for p in torch_model.parameters())  # torch counts the tied lm_head once
    assert f"parameters: {n_params:,}" in out
    import jaxinterp

    cfg = jaxinterp.load(path).cfg
    sizes = {
        "pos": "pos",
        "query_pos": "pos",
        "key_pos": "pos",
        "d_model": hf.n_embd,
        "head": hf.n_head,
        "kv_head": hf.n_head,
        "d_head": hf.n_embd // hf.n_head,
        "neuron": 4 * hf.n_embd,
        "one": 1,
    }
    rows = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^  (\S+)\s+(\S+)\s+(\[[^\]]*\])", out, re.M)}
    expected = {**top_level_site_dims(cfg), **layer_site_dims(cfg)}
    assert set(rows) == set(expected)
    for name, dims in expected.items():
        full, shape = rows[name]
        assert shape == "[" + ", ".join(str(sizes[d]) for d in dims) + "]", name
        assert full == (
            f"blocks.{{l}}.{name.rsplit('.', 1)[0] + '.hook_' + name.rsplit('.', 1)[1] if '.' in name else 'hook_' + name}"
            if name in layer_site_dims(cfg)
            else full
        )
    assert "blocks.{l}.attn.hook_z" in out and "hook_embed" in out
    assert rows["resid_pre"][0] == "blocks.{l}.hook_resid_pre"


def test_site_meanings_cover_every_site():
    from jaxinterp import ModelConfig

    meanings = site_meanings()
    cfgs = [
        ModelConfig(d_model=8, n_layers=1, n_heads=2, d_head=4, d_mlp=8, d_vocab=10, n_ctx=8),
        ModelConfig(
            d_model=8,
            n_layers=1,
            n_heads=2,
            d_head=4,
            d_mlp=8,
            d_vocab=10,
            n_ctx=8,
            positional="rotary",
            gated_mlp=True,
            n_experts=2,
            experts_per_token=1,
        ),
    ]
    names = {n for c in cfgs for n in [*layer_site_dims(c), *top_level_site_dims(c)]}
    assert names - set(meanings) == set()
    assert meanings["attn.v"] == meanings["attn.k"] and "keys" in meanings["attn.k"]
    assert "residual" in meanings["resid_pre"]


# ------------------------------------------------------------------------------ run


def test_run_prints_the_same_top_tokens_as_transformers(capsys, tiny):
    torch_model, path, tok = tiny
    prompt = "When Mary and John went to the store"
    code, out, err = run_cli(capsys, "run", path, prompt, "--top-k", "5", "--generate", "3")
    assert code == 0, err
    logits = torch_logits(torch_model, tok.encode(prompt))[-1]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    want = np.argsort(-logits)[:5]
    got = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(r"id=(\d+)\s+p=([0-9.]+)", out)]
    assert [i for i, _ in got] == list(want)
    np.testing.assert_allclose([p for _, p in got], probs[want], atol=2e-4)
    # Greedy continuation: three argmax steps of the reference model.
    ids = list(tok.encode(prompt))
    for _ in range(3):
        ids.append(int(np.argmax(torch_logits(torch_model, ids)[-1])))
    assert f"greedy continuation: {tok.decode(ids[-3:])!r}" in out


# ---------------------------------------------------------------------------- patch


def test_patch_sweep_matches_torch_hooks(capsys, tiny, tmp_path):
    import torch

    torch_model, path, tok = tiny
    clean, corrupt = (
        "When Mary and John went to the store , John gave a drink to",
        "When Mary and John went to the store , Mary gave a drink to",
    )
    code, out, err = run_cli(
        capsys,
        "patch",
        path,
        "--clean",
        clean,
        "--corrupt",
        corrupt,
        "--site",
        "resid_pre",
        "--answer",
        " Mary",
        "--wrong",
        " John",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    saved = np.load(tmp_path / "patch_resid_pre.npz")
    assert (tmp_path / "patch_resid_pre.png").read_bytes().startswith(b"\x89PNG")
    assert list(saved["dims"]) == ["layer", "pos"]
    assert list(saved["labels_pos"]) == [f"{i}: {t}" for i, t in enumerate(clean.split())]

    # Reference: torch, the clean residual stream written into the corrupted run with a
    # forward pre-hook on block l at position p, one run per (l, p).
    c_ids, k_ids = tok.encode(clean), tok.encode(corrupt)
    mary, john = tok.to_single_token(" Mary"), tok.to_single_token(" John")
    with torch.no_grad():
        clean_hidden = torch_model(torch.tensor([c_ids]), output_hidden_states=True).hidden_states

    def ld(logits):
        return logits[-1, mary] - logits[-1, john]

    ld_clean, ld_corrupt = ld(torch_logits(torch_model, c_ids)), ld(torch_logits(torch_model, k_ids))
    want = np.zeros((torch_model.config.n_layer, len(c_ids)))
    for layer, block in enumerate(torch_model.transformer.h):
        for p in range(len(c_ids)):

            def pre_hook(module, args, kwargs, layer=layer, p=p):
                hidden = args[0].clone()
                hidden[:, p] = clean_hidden[layer][:, p]
                return (hidden, *args[1:]), kwargs

            handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
            try:
                want[layer, p] = (ld(torch_logits(torch_model, k_ids)) - ld_corrupt) / (ld_clean - ld_corrupt)
            finally:
                handle.remove()
    np.testing.assert_allclose(saved["values"], want, atol=2e-4)
    assert float(saved["logit_diff_clean"]) == pytest.approx(ld_clean, abs=1e-4)
    assert f"clean {ld_clean:.3f}, corrupted {ld_corrupt:.3f}" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "/no/such/model"], "no such"),
        (["run", "{path}", ""], "empty prompt"),
        (
            [
                "patch",
                "{path}",
                "--clean",
                "When Mary",
                "--corrupt",
                "When Mary and",
                "--answer",
                " Mary",
                "--wrong",
                " John",
            ],
            "same length",
        ),
        (
            ["patch", "{path}", "--clean", "When Mary", "--corrupt", "When John", "--site", "resid_prex"],
            "unknown site 'resid_prex'",
        ),
        (
            ["patch", "{path}", "--clean", "When Mary", "--corrupt", "When John", "--site", "blocks.1.hook_resid_pre"],
            "short name",
        ),
        (
            ["patch", "{path}", "--clean", "When Mary", "--corrupt", "When John", "--answer", "Mary John"],
            "not a single token",
        ),
    ],
)
def test_errors_are_one_clean_line(capsys, tiny, argv, message):
    _, path, _ = tiny
    code, out, err = run_cli(capsys, *[a.format(path=path) for a in argv])
    assert code == 1
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"jaxinterp {argv[0]}: error:")


def test_usage_errors_exit_2_and_module_entry_point_works(capsys):
    with pytest.raises(SystemExit) as e:
        main(["patch"])
    assert e.value.code == 2
    assert "required" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "jaxinterp", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and all(c in done.stdout for c in ("info", "run", "patch", "demo"))


# ----------------------------------------------------------------------------- demo


def test_demo_writes_a_complete_report(tiny, tmp_path):
    from jaxinterp.apps.demo import IOI_NAMES, IOI_TEMPLATES, ioi_pair, run_demo

    torch_model, path, tok = tiny
    lines = []
    result = run_demo(str(tmp_path / "demo"), model=path, quick=True, echo=lines.append)
    html = open(result.report, encoding="utf-8").read()
    headings = re.findall(r"<h2>(.*?)</h2>", html)
    assert headings == [
        "Prompts and logit difference",
        "Residual stream patching",
        "Attention head patching",
        "Attribution patching",
        "Head detectors",
        "Attention patterns",
        "Logit lens",
        "Steering",
        "Numbers and timings",
    ]
    assert html.count('<img src="data:image/png;base64,') == len(result.figures) - 1  # all but the lens PNG
    assert 'class="ji-attn"' in html and 'class="ji-table ji-lens"' in html
    for f in result.figures.values():
        assert open(f, "rb").read(4) == b"\x89PNG"
    assert os.path.exists(os.path.join(result.out_dir, "attention.html"))
    # Progress lines for every step, then the summary with timings.
    assert [l.split("]")[0] for l in lines if l.startswith("[")] == [f"[{i}/10" for i in range(1, 11)]
    assert any(l.strip().endswith("total") for l in lines)
    assert any(l.startswith("compile seconds: ") for l in lines)  # per step too, for the cache's effect
    assert set(result.compile_times) >= {"total", "xla"}

    # The logit differences it reports are those of the reference model.
    pairs = [ioi_pair(IOI_TEMPLATES[0], *IOI_NAMES[0]), ioi_pair(IOI_TEMPLATES[0], *IOI_NAMES[1])]
    want = []
    for p in pairs:
        a, w = tok.to_single_token(p.answer), tok.to_single_token(p.wrong)
        want.append(
            (
                torch_logits(torch_model, tok.encode(p.clean))[-1, [a, w]] @ [1, -1],
                torch_logits(torch_model, tok.encode(p.corrupted))[-1, [a, w]] @ [1, -1],
            )
        )
    want = np.array(want)
    assert result.numbers["logit diff, clean (mean)"] == pytest.approx(want[:, 0].mean(), abs=1e-4)
    assert result.numbers["logit diff, corrupted (mean)"] == pytest.approx(want[:, 1].mean(), abs=1e-4)
