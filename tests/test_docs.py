"""The docs site: `mkdocs build --strict` passes, and every public name of jaxinterp
(``jaxinterp.__all__`` and each public submodule's ``__all__``, or its public functions
and classes when it has none) has a docstring and appears, with that docstring, in the
generated API reference.

"--strict" makes mkdocs fail on pages missing from the nav, broken links and anchors,
and docstrings griffe cannot parse (see the ``validation`` section of mkdocs.yml).
"""

from __future__ import annotations

import html
import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

import jaxinterp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def public_modules() -> list[str]:
    """``jaxinterp``'s public modules, as the docs hook lists them (layer packages name
    theirs in ``__all__``; packages such as ``jaxinterp.causal.patching`` declare their
    public surface in their ``__init__``)."""
    sys.path.insert(0, os.path.join(ROOT, "docs", "hooks"))
    try:
        from generated import public_modules as listed
    finally:
        sys.path.pop(0)
    return listed()


def public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        n
        for n, o in vars(module).items()
        if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == module.__name__
    ]


def public_objects() -> dict[str, tuple[object, set[str]]]:
    """``"jaxinterp.x.name" -> (object, {anchor ids it may be documented under})``."""
    modules = {m: importlib.import_module(m) for m in public_modules()}
    out = {}
    for mod_name, mod in [("jaxinterp", jaxinterp), *modules.items()]:
        for name in public_names(mod):
            obj = getattr(mod, name)
            if not callable(obj):  # data constants (word lists, tables) carry no docstring of their own
                continue
            # A re-exported object is documented once: under any public module exporting it,
            # or under the module that defines it.
            ids = {f"{m}.{name}" for m, other in modules.items() if getattr(other, name, None) is obj} | {
                f"{mod_name}.{name}"
            }
            if getattr(obj, "__module__", None) and getattr(obj, "__name__", None) == name:
                ids.add(f"{obj.__module__}.{name}")
            out[f"{mod_name}.{name}"] = (obj, ids)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", os.path.join(ROOT, "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(
        line for line in done.stderr.splitlines() if not line.startswith("INFO")
    )
    return out


def page_text(site, rel: str) -> str:
    with open(os.path.join(site, rel), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def api_sections(site):
    """Anchor id -> the plain text of the API reference from that anchor to the next."""
    sections = {}
    api = os.path.join(site, "api")
    for folder, _, files in sorted(os.walk(api)):
        if "index.html" not in files:
            continue
        doc = page_text(site, os.path.relpath(os.path.join(folder, "index.html"), site))
        anchors = list(re.finditer(r'id="(jaxinterp[\w.]*)"', doc))
        for a, b in zip(anchors, anchors[1:] + [None]):
            chunk = doc[a.end() : b.start() if b else len(doc)]
            text = html.unescape(re.sub(r"<[^>]+>", " ", chunk))
            sections.setdefault(a.group(1), " ".join(words(text)))
    return sections


def words(text: str) -> list[str]:
    """Alphanumeric words: what survives Markdown rendering (code spans, emphasis, links)."""
    return re.findall(r"[A-Za-z0-9]+", text)


def summary_words(doc: str) -> list[str]:
    """The first words of a docstring's summary."""
    return words(inspect.cleandoc(doc).split("\n\n")[0])[:6]


def has_docstring(obj) -> bool:
    """A docstring written for ``obj`` (not inherited, not a NamedTuple's generated one)."""
    doc = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    if not (doc or "").strip():
        return False
    fields = getattr(obj, "_fields", None)
    return not (inspect.isclass(obj) and fields is not None and doc == f"{obj.__name__}({', '.join(fields)})")


def test_every_public_module_has_an_api_page():
    missing = []
    for mod in public_modules():
        rel = "/".join(mod.split(".")[1:]) + ".md"
        page = os.path.join(ROOT, "docs", "api", rel)
        if not os.path.exists(page) or f"::: {mod}" not in open(page, encoding="utf-8").read():
            missing.append(f"{mod} (expected docs/api/{rel} with '::: {mod}', listed in mkdocs.yml's nav)")
    assert not missing, "public modules without an API page: " + "; ".join(missing)


def test_every_public_name_is_documented_with_its_docstring(site, api_sections):
    objects = public_objects()
    assert "jaxinterp.load" in objects and "jaxinterp.viz.patching_heatmap" in objects and len(objects) > 100
    no_docstring = sorted(n for n, (obj, _) in objects.items() if not has_docstring(obj))
    assert not no_docstring, f"public names without a docstring: {no_docstring}"
    not_in_reference, docstring_not_shown = [], []
    for name, (obj, ids) in objects.items():
        found = [i for i in ids if i in api_sections]
        if not found:
            not_in_reference.append(name)
            continue
        words = summary_words(inspect.getdoc(obj))
        if not any(" ".join(words) in api_sections[i] for i in found):
            docstring_not_shown.append(f"{name}: {' '.join(words)!r}")
    assert not not_in_reference, f"public names missing from the API reference: {sorted(not_in_reference)}"
    assert not docstring_not_shown, f"docstrings not rendered in the API reference: {docstring_not_shown}"


def test_api_index_links_every_top_level_name(site):
    index = page_text(site, os.path.join("api", "index.html"))
    for name in jaxinterp.__all__:
        assert re.search(rf'href="[^"]*#jaxinterp\.[\w.]*\b{name}"', index), (
            f"api/index.md has no link for jaxinterp.{name}"
        )


def test_sites_page_is_generated_from_the_code(site):
    from jaxinterp import ModelConfig
    from jaxinterp.core.sites import layer_site_dims, top_level_site_dims

    text = html.unescape(re.sub(r"<[^>]+>", " ", page_text(site, os.path.join("sites", "index.html"))))
    cfg = ModelConfig(
        d_model=576,
        n_layers=30,
        n_heads=9,
        n_kv_heads=3,
        d_head=64,
        d_mlp=1536,
        d_vocab=49152,
        n_ctx=2048,
        normalization="rmsnorm",
        positional="rotary",
        gated_mlp=True,
        act_fn="silu",
    )
    sizes = {
        "pos": "pos",
        "query_pos": "pos",
        "key_pos": "pos",
        "d_model": 576,
        "head": 9,
        "kv_head": 3,
        "d_head": 64,
        "neuron": 1536,
        "one": 1,
    }
    for name, dims in {**layer_site_dims(cfg), **top_level_site_dims(cfg)}.items():
        shape = "[" + ", ".join(str(sizes[d]) for d in dims) + "]"
        # Rows of the shapes table: name, GPT-2 small's shape (or a dash), SmolLM2's shape.
        row = rf"\b{re.escape(name)}\s+(?:\[[^\]]*\]|—)\s+{re.escape(shape)}"
        assert re.search(row, text), f"sites page: no SmolLM2 shape {shape} for {name}"
    assert "blocks.{l}.attn.hook_z" in text and "[pos, kv_head, d_head]" in text


def test_site_loads_nothing_from_the_network(site):
    remote = []
    for folder, _, files in os.walk(site):
        for f in files:
            if f.endswith(".html"):
                doc = page_text(site, os.path.join(folder, f))
                remote += re.findall(r'<(?:script|img|iframe)[^>]+src="((?:https?:)?//[^"]+)"', doc)
                remote += re.findall(r'<link[^>]+rel="stylesheet"[^>]+href="((?:https?:)?//[^"]+)"', doc)
    assert not remote, f"the docs load from the network: {sorted(set(remote))[:5]}"
