"""The architecture's rules, checked: import layers (import-linter), the staged forward as
the only way into the model, and one site vocabulary (docs/architecture.md)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

import jaxinterp
from jaxinterp.core.sites import SITES, layer_site_dims, top_level_site_dims

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "jaxinterp")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def python_files(folder):
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def lint_imports(cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": cwd}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_layers_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The positive control: core importing a technique must fail the contract."""
    shutil.copytree(PACKAGE, tmp_path / "jaxinterp", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    config = tmp_path / "jaxinterp" / "core" / "config.py"
    config.write_text(config.read_text() + "\nfrom ..causal import patching  # an upward import\n")
    result = lint_imports(str(tmp_path))
    assert result.returncode != 0
    assert "jaxinterp.core.config -> jaxinterp.causal" in result.stdout


def _calls(tree: ast.AST) -> set[str]:
    return {
        node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }


def test_only_the_model_builds_hooks_or_chains_the_stages():
    """Techniques reach the model through `Transformer.run`: none constructs `Hooks`, and
    none calls the model's private stages (`_embed`, `_blocks`, `_readout`)."""
    stages = {"_embed", "_blocks", "_readout"}
    offenders = []
    for path in python_files(PACKAGE):
        rel = os.path.relpath(path, PACKAGE)
        if rel.startswith("model" + os.sep):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        names = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if {"Hooks", "Plan"} & names:
            offenders.append(f"{rel}: constructs Hooks/Plan")
        if _calls(tree) & stages:
            offenders.append(f"{rel}: calls {sorted(_calls(tree) & stages)}")
    assert not offenders, offenders


def test_public_code_imports_no_private_names_and_nothing_from_apps():
    """examples/, benchmarks/ and the docs hooks use the public API only."""
    offenders = []
    for folder in ("examples", "benchmarks", os.path.join("docs", "hooks")):
        for path in python_files(os.path.join(ROOT, folder)):
            tree = ast.parse(open(path, encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxinterp"):
                    parts = node.module.split(".")
                    if any(p.startswith("_") for p in parts) or any(a.name.startswith("_") for a in node.names):
                        offenders.append(f"{os.path.relpath(path, ROOT)}: private import from {node.module}")
                    if parts[1:2] == ["apps"] and not path.endswith(os.path.join("examples", "demo_report.py")):
                        offenders.append(f"{os.path.relpath(path, ROOT)}: imports {node.module}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    "flags",
    [
        {},
        dict(positional="rotary", gated_mlp=True, normalization="rmsnorm", n_kv_heads=1),
        dict(n_experts=2, experts_per_token=1, positional="rotary", gated_mlp=True),
        dict(post_norm=True, causal=False, embed_norm=True, n_token_types=2),
        dict(post_attn_norm=True, post_mlp_norm=True, attn_only=False),
        dict(attn_only=True),
        dict(parallel_attn_mlp=True, positional="rotary"),
    ],
)
def test_every_site_a_model_has_has_a_meaning(flags):
    cfg = jaxinterp.ModelConfig(d_model=8, n_layers=1, n_heads=2, d_head=4, d_mlp=8, d_vocab=10, n_ctx=8, **flags)
    meanings = {spec.name: spec.meaning for spec in SITES}
    for name in [*top_level_site_dims(cfg), *layer_site_dims(cfg)]:
        assert meanings.get(name, "").strip(), f"site {name!r} has no meaning in SITES"


def test_every_site_the_model_records_is_in_the_table():
    """The model records exactly the sites `SITES` says it has (attn.result on request)."""
    import jax.numpy as jnp

    from jaxinterp.toy import random_model

    for flags in (
        dict(positional="rotary", gated_mlp=True, normalization="rmsnorm", n_kv_heads=1),
        dict(post_attn_norm=True, post_mlp_norm=True, normalization="rmsnorm"),
        dict(post_norm=True, causal=False, embed_norm=True, n_token_types=2),
    ):
        cfg = jaxinterp.ModelConfig(d_model=8, n_layers=1, n_heads=2, d_head=4, d_mlp=8, d_vocab=10, n_ctx=8, **flags)
        model = random_model(cfg, 0)
        expected = set(top_level_site_dims(cfg)) | set(layer_site_dims(cfg))
        _, cache = model.run_with_cache(jnp.arange(4), names=lambda n: True)
        assert set(cache.keys()) == expected
