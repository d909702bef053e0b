"""Self-contained HTML: escaping, one page template, and the shared stylesheet.

Pages made by `jaxinterp.viz` and `jaxinterp.viz.report` load nothing from the network:
styles and scripts are inlined, images are ``data:`` URIs.
"""

from __future__ import annotations

import html as _html
import json

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1.2em; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; background: #f4f5f7; }
pre { padding: 0.6em 0.8em; overflow-x: auto; }
table.ji-table { border-collapse: collapse; margin: 0.6em 0; }
table.ji-table th, table.ji-table td { border: 1px solid #d5d8dc; padding: 0.2em 0.55em; text-align: left; }
table.ji-table th { background: #eef1f4; }
figure.ji-figure { margin: 1em 0; } figure.ji-figure img { max-width: 100%; border: 1px solid #e3e5e8; }
figcaption { color: #555; font-size: 0.9em; }
.ji-note { color: #555; }
"""


def escape(text) -> str:
    """HTML-escape any value's ``str`` (quotes included, for attributes)."""
    return _html.escape(str(text), quote=True)


def json_for_script(data) -> str:
    """JSON safe to place inside ``<script type="application/json">`` (no ``</script>``)."""
    return (
        json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


def page(title: str, body: str, extra_style: str = "") -> str:
    """A complete HTML document around ``body`` (already HTML) with the shared style."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}{extra_style}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def table(rows, header=None, cls: str = "ji-table") -> str:
    """An HTML table of escaped cells; ``header`` is an optional first row of column names."""
    out = [f'<table class="{escape(cls)}">']
    if header is not None:
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)
