"""The console added to the read API's application: its routes, its static files, the
optional login (console.password), and a redirect from / to the cameras page."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from consumer.api.app import create_app
from consumer.api.settings import ApiSettings
from consumer.console.auth import install_login
from consumer.console.pages import ConsoleOptions, Pages, home

HERE = Path(__file__).parent


def create_server(settings: ApiSettings, options: ConsoleOptions,
                  password_hash: str | None = None, s3_client=None,
                  secret_key: str | None = None) -> Starlette:
    """The read API and the console in one application (`kvs-analytics serve`)."""
    if s3_client is None:
        from consumer.cloud.aws import AwsContext
        s3_client = AwsContext(settings.endpoint_url, settings.region).client("s3")
    app = create_app(settings, s3_client)
    templates = Jinja2Templates(directory=HERE / "templates")
    pages = Pages(options, templates, s3_client)
    app.router.routes.extend([
        Route("/", home),
        Route("/console/", pages.cameras, name="console-cameras"),
        Route("/console/tiles.json", pages.tiles_json, name="console-tiles"),
        Route("/console/cameras/{stream}", pages.timeline, name="console-timeline"),
        Route("/console/events/{event_id}", pages.event, name="console-event"),
        Route("/console/search", pages.search, name="console-search"),
        Mount("/console/static", StaticFiles(directory=HERE / "static"),
              name="console-static"),
    ])
    install_login(app, templates, password_hash, secret_key)
    return app
