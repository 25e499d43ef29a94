"""The web console served at ``/`` by ``visearch serve``: one server-rendered page (Jinja2,
``templates/``) and plain JavaScript (``static/console.js``) that calls the same ``/v1`` HTTP API
as any script; nothing here is an API of its own.

Layout of the page: a dataset panel (state, live embedding progress, enable/disable, update,
model), and tabs. A mode is one more tab: add ``(id, label)`` to :data:`TABS`, a template
``templates/tabs/<id>.html`` (its panel) and a ``Console.registerTab("<id>", {...})`` block in
``static/console.js`` (or its own script in ``static/``, listed in :data:`SCRIPTS`).

Auth: the page and its static files are public (``exclude_from_auth``); with API keys the page
asks for a key, keeps it in ``sessionStorage`` and sends it as ``X-API-Key`` (images are then
fetched with the header into blob URLs), never in a URL. Works offline: no CDN, no web fonts.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Request, get
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

_HERE = Path(__file__).resolve().parent
#: The console's tabs, in order: (id, label). Each has templates/tabs/<id>.html.
TABS: list[tuple[str, str]] = [
    ("search", "Search"),
    ("collections", "Collections"),
    ("find", "Find images"),
]
#: Scripts the page loads, in order (under /console/static/).
SCRIPTS: list[str] = ["console.js"]
_PUBLIC = {"exclude_from_auth": True, "role": "read"}


@get("/", include_in_schema=False, opt=_PUBLIC, sync_to_thread=False)
def console_page(request: Request) -> Template:
    """The console page (HTML)."""
    from visearch.http.app import _version

    return Template("console.html", context={
        "tabs": TABS, "scripts": SCRIPTS, "version": _version(),
        "api_keys_required": bool(request.app.state.api_keys),
    })


def template_config() -> TemplateConfig:
    return TemplateConfig(directory=_HERE / "templates", engine=JinjaTemplateEngine)


def console_handlers() -> list:
    """Route handlers of the console: the page at ``/`` and its files at ``/console/static``."""
    static = create_static_files_router(
        path="/console/static", directories=[_HERE / "static"], opt=_PUBLIC, include_in_schema=False,
        cache_control=None,
    )
    return [console_page, static]
