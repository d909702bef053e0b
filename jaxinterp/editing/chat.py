"""Chat templates for instruct models, so instructions reach the model formatted as it
was trained to read them.

The template is the model's own Jinja template, from a GGUF's
``tokenizer.chat_template`` metadata or a HuggingFace ``tokenizer_config.json``. It is
rendered with ``jinja2`` when that is installed (in a sandboxed environment, as
transformers does). Without ``jinja2``, a template that uses ChatML markers
(``<|im_start|>role\\n...<|im_end|>``, as SmolLM2 and Qwen do) is rendered by a built-in
ChatML formatter; that fallback writes the messages it is given and nothing else (no
default system message a template might insert: pass one explicitly to match).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from jaxinterp.editing.common import EditingError
from jaxinterp.loading.gguf import read_gguf

__all__ = ["ChatTemplate", "chat_template", "format_instruction", "render_chatml"]

_CHATML_START, _CHATML_END = "<|im_start|>", "<|im_end|>"


def render_chatml(messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """Plain ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
    ``<|im_start|>assistant\\n`` if ``add_generation_prompt``."""
    out = "".join(f"{_CHATML_START}{m['role']}\n{m['content']}{_CHATML_END}\n" for m in _check_messages(messages))
    return out + (f"{_CHATML_START}assistant\n" if add_generation_prompt else "")


def _check_messages(messages):
    if isinstance(messages, (str, dict)) or not messages:
        raise EditingError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise EditingError(f"each message must be a dict with str 'role' and 'content', got {m!r}")
    return messages


class ChatTemplate:
    """A chat template: ``source`` is the Jinja text (or None for plain ChatML);
    ``bos_token``/``eos_token`` are passed to the template as transformers does.
    ``use_jinja=False`` forces the ChatML fallback (for templates that are ChatML)."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "", use_jinja: bool | None = None):
        self.source = source
        self.bos_token, self.eos_token = bos_token or "", eos_token or ""
        if use_jinja is None:
            use_jinja = source is not None and _have_jinja()
        if use_jinja and source is None:
            raise EditingError("use_jinja=True needs a template source")
        if use_jinja and not _have_jinja():
            raise EditingError("use_jinja=True, but jinja2 is not installed (pip install jinja2)")
        if not use_jinja and source is not None and _CHATML_START not in source:
            raise EditingError(
                "this chat template is not ChatML and jinja2 is not installed to render it: pip install jinja2"
            )
        self.use_jinja = use_jinja
        self._compiled = _compile(source) if use_jinja else None

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (dicts with ``role`` and ``content``), ending with
        the assistant turn's opening if ``add_generation_prompt``."""
        messages = _check_messages(messages)
        if self._compiled is None:
            return render_chatml(messages, add_generation_prompt)
        return self._compiled.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def __repr__(self):
        return f"ChatTemplate({'jinja' if self.use_jinja else 'chatml fallback'})"


def _have_jinja() -> bool:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return False
    return True


def _compile(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):  # templates call this to reject bad conversations
        raise EditingError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def chat_template(path: str, use_jinja: bool | None = None) -> ChatTemplate:
    """The chat template of a model: ``path`` a GGUF file (metadata
    ``tokenizer.chat_template``), a ``tokenizer_config.json``, or a directory holding one."""
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer_config.json")
    if not os.path.isfile(path):
        raise EditingError(
            f"chat_template: {path} is not a file (expected a .gguf, a tokenizer_config.json or a directory)"
        )
    if path.endswith(".gguf"):
        fields = read_gguf(path).metadata
        if "tokenizer.chat_template" not in fields:
            raise EditingError(f"{path} has no tokenizer.chat_template metadata")
        source = fields["tokenizer.chat_template"]
        tokens = fields.get("tokenizer.ggml.tokens", [])

        def special(key):
            i = fields.get(f"tokenizer.ggml.{key}_token_id")
            return tokens[i] if i is not None and 0 <= i < len(tokens) else ""

        return ChatTemplate(source, special("bos"), special("eos"), use_jinja)
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise EditingError(f"{path} is not valid JSON: {e}") from None
    source = config.get("chat_template")
    if source is None:
        raise EditingError(f"{path} has no 'chat_template' entry")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source}
        source = named.get("default") or next(iter(named.values()))

    def token(key):
        v = config.get(key)
        return v.get("content", "") if isinstance(v, dict) else (v or "")

    return ChatTemplate(source, token("bos_token"), token("eos_token"), use_jinja)


def format_instruction(template: ChatTemplate, instruction: str, system: str | None = None) -> str:
    """One user ``instruction`` as a prompt ending where the assistant's reply begins."""
    if not isinstance(instruction, str):
        raise EditingError(f"instruction must be a str, got {type(instruction).__name__}")
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": instruction}
    ]
    return template.render(messages, add_generation_prompt=True)
