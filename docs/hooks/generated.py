"""mkdocs hook: tables generated from the code at build time, so they cannot drift.

- ``<!-- sites-table -->`` (docs/sites.md): every hook site from `jaxinterp.core.sites`, with
  TransformerLens names, dims, meanings, which architectures have it, and shapes for
  GPT-2 small and SmolLM2-135M.
- ``<!-- api-index -->`` (docs/api/index.md): every name in ``jaxinterp.__all__`` and
  every public module, linked to its API page.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import jaxinterp
from jaxinterp import ModelConfig
from jaxinterp.core.sites import SITES, site_rows

SITES_MARKER = "<!-- sites-table -->"
API_MARKER = "<!-- api-index -->"


def reference_configs() -> dict[str, ModelConfig]:
    """Representative architectures: which sites exist depends on these features."""
    common = dict(n_ctx=2048)
    return {
        "GPT-2 small": ModelConfig(
            d_model=768, n_layers=12, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024, family="gpt2"
        ),
        "SmolLM2-135M": ModelConfig(
            d_model=576,
            n_layers=30,
            n_heads=9,
            n_kv_heads=3,
            d_head=64,
            d_mlp=1536,
            d_vocab=49152,
            act_fn="silu",
            normalization="rmsnorm",
            positional="rotary",
            gated_mlp=True,
            family="llama",
            **common,
        ),
        "Pythia (NeoX)": ModelConfig(
            d_model=512,
            n_layers=6,
            n_heads=8,
            d_head=64,
            d_mlp=2048,
            d_vocab=50304,
            positional="rotary",
            rotary_dim=16,
            parallel_attn_mlp=True,
            family="gpt_neox",
            **common,
        ),
        "Gemma 2": ModelConfig(
            d_model=2304,
            n_layers=26,
            n_heads=8,
            n_kv_heads=4,
            d_head=256,
            d_mlp=9216,
            d_vocab=256000,
            normalization="rmsnorm",
            positional="rotary",
            gated_mlp=True,
            post_attn_norm=True,
            post_mlp_norm=True,
            family="gemma2",
            **common,
        ),
        "Mixtral": ModelConfig(
            d_model=4096,
            n_layers=32,
            n_heads=32,
            n_kv_heads=8,
            d_head=128,
            d_mlp=14336,
            d_vocab=32000,
            normalization="rmsnorm",
            positional="rotary",
            gated_mlp=True,
            n_experts=8,
            experts_per_token=2,
            family="mixtral",
            **common,
        ),
        "BERT": ModelConfig(
            d_model=384,
            n_layers=6,
            n_heads=12,
            d_head=32,
            d_mlp=1536,
            d_vocab=30522,
            n_ctx=512,
            post_norm=True,
            causal=False,
            embed_norm=True,
            n_token_types=2,
            family="bert",
        ),
    }


def sites_markdown() -> str:
    configs = reference_configs()
    meanings = {spec.name: spec.meaning for spec in SITES}
    rows_by_model = {label: {r.short: r for r in site_rows(cfg)} for label, cfg in configs.items()}
    names: list[str] = []
    for rows in rows_by_model.values():
        names += [n for n in rows if n not in names]
    out = [
        "| short name | TransformerLens name | dims (one layer) | meaning | " + " | ".join(configs) + " |",
        "|---|---|---|---|" + "---|" * len(configs),
    ]
    for name in names:
        row = next(rows[name] for rows in rows_by_model.values() if name in rows)
        marks = ["✓" if name in rows else "" for rows in rows_by_model.values()]
        out.append(
            f"| `{name}` | `{row.full_name}` | `[{', '.join(row.dims)}]` | {meanings.get(name, '')} | "
            + " | ".join(marks)
            + " |"
        )
    shown = ("GPT-2 small", "SmolLM2-135M")
    out += ["", "Shapes of one layer's activation in two real models (`pos` is the number of tokens):", ""]
    out.append("| short name | " + " | ".join(shown) + " |")
    out.append("|---|" + "---|" * len(shown))
    for name in names:
        cells = [
            f"`[{', '.join(map(str, rows_by_model[m][name].shape))}]`" if name in rows_by_model[m] else "—"
            for m in shown
        ]
        out.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(out)


def public_modules() -> list[str]:
    """``jaxinterp``'s public modules: the top-level modules, and for each layer package
    (``jaxinterp.core``, ``jaxinterp.causal``, ...) the modules its ``__all__`` names, or
    the package itself when its ``__all__`` names objects (``jaxinterp.model``)."""
    out = []
    for m in pkgutil.iter_modules(jaxinterp.__path__):
        if m.name.startswith("_"):
            continue
        name = f"jaxinterp.{m.name}"
        if not m.ispkg:
            out.append(name)
            continue
        package = importlib.import_module(name)
        names = list(getattr(package, "__all__", ()))
        modules = names and all(importlib.util.find_spec(f"{name}.{s}") is not None for s in names)
        out += [f"{name}.{s}" for s in names] if modules else [name]
    return sorted(out)


def api_page(module: str) -> str:
    """The API page documenting ``module`` (``jaxinterp.causal.patching`` -> ``causal/patching.md``)."""
    return "/".join(module.split(".")[1:]) + ".md"


# Modules with a page of their own inside a package documented as a whole.
EXTRA_PAGES = [
    "jaxinterp.model.interventions",
    "jaxinterp.model.cache",
    "jaxinterp.model.vision",
    "jaxinterp.model.kv_cache",
    "jaxinterp.model.sharding",
    "jaxinterp.loading.tokenizer",
    "jaxinterp.viz.report",
]


def home_module(name: str) -> str:
    """The public module whose API page documents ``jaxinterp.<name>``: the deepest public
    module that the object's defining module is in."""
    obj = getattr(jaxinterp, name)
    defining = getattr(obj, "__module__", "jaxinterp") or "jaxinterp"
    candidates = [m for m in public_modules() + EXTRA_PAGES if defining == m or defining.startswith(m + ".")]
    return max(candidates, key=len) if candidates else defining


def first_line(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].replace("|", "\\|") if doc else ""


def api_markdown() -> str:
    out = ["| name | what it is |", "|---|---|"]
    for name in jaxinterp.__all__:
        mod = home_module(name)
        out.append(f"| [`jaxinterp.{name}`]({api_page(mod)}#{mod}.{name}) | {first_line(getattr(jaxinterp, name))} |")
    out += ["", "## Modules", "", "| module | what it is |", "|---|---|"]
    for mod in public_modules()[1:]:
        out.append(f"| [`{mod}`]({api_page(mod)}) | {first_line(importlib.import_module(mod))} |")
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    if SITES_MARKER in markdown:
        markdown = markdown.replace(SITES_MARKER, sites_markdown())
    if API_MARKER in markdown:
        markdown = markdown.replace(API_MARKER, api_markdown())
    return markdown
