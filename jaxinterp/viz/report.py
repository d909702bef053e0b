"""`Report`: one self-contained HTML file of an investigation.

Sections hold text, tables, figures and interactive widgets. Figures are inlined as
base64 PNG ``data:`` URIs and scripts/styles are inline, so the file can be mailed,
archived or opened offline, and it loads nothing from the network::

    report = Report("IOI on SmolLM2")
    report.section("Residual patching", "Which (layer, position) restores the answer?")
    report.figure(fig, caption="normalised logit difference")
    report.save("out/demo/report.html")
"""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence, Union

from matplotlib.figure import Figure

from .figures import figure_png, png_data_uri
from .html import escape, page, table

__all__ = ["Report", "external_resources"]

_SLUG = re.compile(r"[^a-z0-9]+")


class Report:
    """An HTML report built section by section; `to_html` / `save` render it.

    Each method appends to the current section (the first call to `section` opens one)
    and returns ``self`` so calls can chain.
    """

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self._sections: list[tuple[str, str, list[str]]] = []  # (id, heading, parts)

    def section(self, heading: str, text: str = "") -> "Report":
        """Open a new section (an ``<h2>`` and a table-of-contents entry)."""
        slug = _SLUG.sub("-", heading.lower()).strip("-") or "section"
        taken = {s[0] for s in self._sections}
        sid, i = slug, 2
        while sid in taken:
            sid, i = f"{slug}-{i}", i + 1
        self._sections.append((sid, heading, []))
        if text:
            self.text(text)
        return self

    def _parts(self) -> list[str]:
        if not self._sections:
            self.section("Results")
        return self._sections[-1][2]

    def text(self, text: str) -> "Report":
        """A paragraph of plain text (escaped; ``code`` in backticks is kept as code)."""
        parts = escape(text).split("`")
        html = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
        self._parts().append(f"<p>{html}</p>")
        return self

    def code(self, text: str) -> "Report":
        """A preformatted block (commands, printed output)."""
        self._parts().append(f"<pre>{escape(text)}</pre>")
        return self

    def table(self, rows: Sequence[Sequence], header: Optional[Sequence[str]] = None) -> "Report":
        """A table of escaped cells."""
        self._parts().append(table(rows, header))
        return self

    def figure(self, fig: Union[Figure, bytes, str], caption: str = "", alt: str = "") -> "Report":
        """A figure: a matplotlib `Figure`, PNG bytes, or the path of a PNG file, inlined
        as a base64 ``data:`` URI."""
        if isinstance(fig, Figure):
            png = figure_png(fig)
        elif isinstance(fig, (bytes, bytearray)):
            png = bytes(fig)
        elif isinstance(fig, (str, os.PathLike)):
            with open(fig, "rb") as f:
                png = f.read()
        else:
            raise TypeError(f"figure() takes a matplotlib Figure, PNG bytes or a PNG path, got {type(fig).__name__}")
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._parts().append(
            f'<figure class="ji-figure"><img src="{png_data_uri(png)}" alt="{escape(alt or caption)}">{cap}</figure>'
        )
        return self

    def html(self, fragment: str) -> "Report":
        """Raw HTML (e.g. `jaxinterp.viz.attention_widget`). It must be self-contained:
        `to_html` refuses fragments that load anything from the network."""
        self._parts().append(fragment)
        return self

    def to_html(self) -> str:
        """The whole report as one HTML document."""
        toc = "".join(f'<li><a href="#{sid}">{escape(h)}</a></li>' for sid, h, _ in self._sections)
        body = [f"<h1>{escape(self.title)}</h1>"]
        if self.subtitle:
            body.append(f'<p class="ji-note">{escape(self.subtitle)}</p>')
        if toc:
            body.append(f'<nav class="ji-toc"><ol>{toc}</ol></nav>')
        for sid, heading, parts in self._sections:
            body.append(
                f'<section id="{sid}" class="ji-section">\n<h2>{escape(heading)}</h2>\n'
                + "\n".join(parts)
                + "\n</section>"
            )
        doc = page(self.title, "\n".join(body))
        remote = external_resources(doc)
        if remote:
            raise ValueError(f"the report would load from the network: {remote[:3]}; inline these resources instead")
        return doc

    def save(self, path: str) -> str:
        """Write the HTML to ``path`` (creating folders). Returns the path."""
        doc = self.to_html()
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc)
        return path


_REMOTE = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)|@import\s+url\(\s*["']?((?:https?:)?//[^"')]+)""", re.I
)


def external_resources(html: str) -> list[str]:
    """URLs that an HTML document would fetch (``src``/``href`` to ``http(s)://`` or
    ``//``, CSS ``@import``). Links for the reader are ``href`` too, so a self-contained
    report has none at all."""
    return [a or b for a, b in _REMOTE.findall(html)]
