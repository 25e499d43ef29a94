"""``/schema``: the API reference as one self-contained HTML page, rendered on the server.

Litestar's default OpenAPI pages (Scalar, Swagger UI, ReDoc) load their scripts from CDNs, which
an offline server or a strict network cannot reach, and which run third-party code in the
caller's browser. This page has no script and no external link: every operation with its
parameters, request body and responses, from the same OpenAPI document that
``/schema/openapi.json`` serves (the machine-readable source for clients and tools).
"""

from __future__ import annotations

import html
import json
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

_STYLE = """<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 64em; padding: 0 1em; color: #222 }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc } .op { margin: 1em 0 2em }
.method { font: bold 13px monospace; padding: 2px 6px; border-radius: 3px; color: #fff; background: #555 }
.get { background: #2a7 } .post { background: #27c } .delete { background: #c33 }
code, pre { background: #f4f4f4 } pre { padding: .6em; overflow-x: auto; font-size: 13px }
table { border-collapse: collapse } td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top }
</style>"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ref_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else ""


def _schema_text(schema: dict[str, Any]) -> str:
    name = _ref_name(schema)
    if name:
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    return f"<code>{_e(json.dumps(schema, separators=(', ', ': '))[:300])}</code>"


def render_page(spec: dict[str, Any]) -> str:
    """The HTML page of an OpenAPI document (a dict as ``/schema/openapi.json`` serves it)."""
    info = spec.get("info", {})
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(info.get('title', 'API'))} API</title>",
           _STYLE, "</head><body>",
           f"<h1>{_e(info.get('title', ''))} {_e(info.get('version', ''))}</h1>",
           f"<p>{_e(info.get('description', ''))}</p>",
           '<p>Machine-readable: <a href="/schema/openapi.json">/schema/openapi.json</a>.</p>']
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete", "head"):
                continue
            out.append(f"<div class='op'><h2><span class='method {method}'>{method.upper()}</span> "
                       f"<code>{_e(path)}</code> {_e(op.get('summary', ''))}</h2>")
            out.append(f"<pre>{_e(op.get('description', ''))}</pre>")
            params = op.get("parameters", [])
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th>description</th></tr>")
                for p in params:
                    out.append(f"<tr><td><code>{_e(p.get('name'))}</code>{' *' if p.get('required') else ''}</td>"
                               f"<td>{_e(p.get('in'))}</td><td>{_schema_text(p.get('schema', {}))}</td>"
                               f"<td>{_e(p.get('description', ''))}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody")
            if body:
                for ctype, media in body.get("content", {}).items():
                    out.append(f"<p>body <code>{_e(ctype)}</code>: {_schema_text(media.get('schema', {}))}</p>")
            out.append("<table><tr><th>status</th><th>description</th><th>body</th></tr>")
            for status, resp in op.get("responses", {}).items():
                bodies = ", ".join(_schema_text(m.get("schema", {})) for m in resp.get("content", {}).values())
                out.append(f"<tr><td>{_e(status)}</td><td>{_e(resp.get('description', ''))}</td><td>{bodies}</td></tr>")
            out.append("</table></div>")
    out.append("<h2>Schemas</h2>")
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        out.append(f"<h3 id='schema-{_e(name)}'>{_e(name)}</h3>"
                   f"<pre>{_e(json.dumps(schema, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


class OfflineDocsPlugin(OpenAPIRenderPlugin):
    """Serves :func:`render_page` at ``/schema`` (no CDN, no script)."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/docs"], favicon="", style="")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return render_page(openapi_schema).encode()
