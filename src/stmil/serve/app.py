"""The web app of ``stmil serve``: three pages, a JSON API over :mod:`stmil.serve.catalog` and
:mod:`stmil.serve.videos`, and the media files under the served folder.

Routes (every error is a JSON ``{"error": "..."}`` with its status, never a traceback):

- ``/``, ``/videos``, ``/video/{id}``: the pages (static HTML; their scripts call the API);
- ``/api/summary``, ``/api/runs``, ``/api/runs/{name}``, ``/api/videos``, ``/api/videos/{id}``;
- ``/media/{path}``: a video or image under the folder (:func:`stmil.serve.paths.media_file`),
  with HTTP range requests;
- ``/proxy/{path}``: the H.264 copy of a video under the folder that browsers do not play,
  made on the first request (:mod:`stmil.serve.proxy`; the only thing the app writes);
- ``/static/...``: the pages' CSS and JavaScript.

Every response carries a Content-Security-Policy that allows nothing but this server, so a
page can fetch nothing from the network.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stmil.errors import ConfigError, StmilError
from stmil.serve.catalog import Catalog
from stmil.serve.paths import BROWSER_VIDEO, MEDIA_TYPES, media_file
from stmil.serve.proxy import ensure_proxy
from stmil.serve.videos import PROXY_ROUTE, VideoViews

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
PAGES = {"runs": "runs.html", "videos": "videos.html", "video": "video.html"}


class _Headers:
    """ASGI middleware: the Content-Security-Policy and ``nosniff`` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"content-security-policy", CSP.encode()),
                                      (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(root: str | Path) -> Starlette:
    """The ASGI app serving ``root`` read-only but for its proxies cache
    (:mod:`stmil.serve.proxy`); :class:`ConfigError` when it is no folder."""
    catalog = Catalog(root)
    views = VideoViews(catalog)

    def page(name: str):
        def endpoint(request: Request) -> Response:
            return FileResponse(STATIC / PAGES[name], media_type="text/html")
        return endpoint

    def summary(request: Request) -> Response:
        return JSONResponse(catalog.summary())

    def runs(request: Request) -> Response:
        return JSONResponse(catalog.runs())

    def run(request: Request) -> Response:
        try:
            source = catalog.source(request.path_params["name"])
        except KeyError as e:
            return _error(404, e.args[0])
        return JSONResponse(catalog.run_view(source))

    def videos(request: Request) -> Response:
        return JSONResponse(views.listing())

    def video(request: Request) -> Response:
        try:
            return JSONResponse(views.detail(request.path_params["video_id"]))
        except KeyError as e:
            return _error(404, e.args[0])

    def media(request: Request) -> Response:
        path = media_file(catalog.root, request.path_params["path"])
        if path is None:
            return _error(404, "no such media file in the served folder")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix.lower()])

    def proxy(request: Request) -> Response:
        path = media_file(catalog.root, request.path_params["path"])
        if path is None or path.suffix.lower() in BROWSER_VIDEO:
            return _error(404, "no such video to transcode in the served folder")
        try:
            made = ensure_proxy(catalog.root, path)
        except StmilError as e:
            log.error("%s", " ".join(str(e).split()))
            return _error(409, " ".join(str(e).split()))
        return FileResponse(made, media_type="video/mp4")

    routes = [
        Route("/", page("runs")), Route("/videos", page("videos")),
        Route("/video/{video_id}", page("video")),
        Route("/api/summary", summary), Route("/api/runs", runs),
        Route("/api/runs/{name:path}", run), Route("/api/videos", videos),
        Route("/api/videos/{video_id}", video),
        Route("/media/{path:path}", media, methods=["GET", "HEAD"]),
        Route(PROXY_ROUTE + "{path:path}", proxy, methods=["GET", "HEAD"]),
    ]
    return starlette_app(routes)


def starlette_app(routes: list) -> Starlette:
    """An app of ``routes`` (the pages' ``/static`` files added) with the headers and JSON
    errors of every stmil page."""
    routes = [*routes, Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, middleware=[Middleware(_Headers)],
                     exception_handlers={HTTPException: _http_error, Exception: _server_error})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "") or "error"
    return _error(status, "not found" if status == 404 else str(detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s: %s", request.method, request.url.path, " ".join(str(exc).split()))
    return _error(500, f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}")


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``root`` at ``http://host:port`` until interrupted. Binding another address than
    the loopback one is warned about (anyone who reaches it sees the folder); a port that is
    taken is an :class:`OSError` naming it."""
    import uvicorn

    app = create_app(root)
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, got {port}")
    sock = listen(host, port, "the folder", "--port")
    shown = f"[{host}]" if ":" in host else host
    log.info(f"serving {Path(root)} at http://{shown}:{port}/ (Ctrl-C stops)")
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int, what: str, flag: str) -> socket.socket:
    """A socket bound to ``host:port``, warning when ``host`` is not a loopback address
    (anyone who reaches it sees ``what``); a port that is taken is an :class:`OSError` naming
    it and ``flag``."""
    if host not in LOCAL_HOSTS:
        log.warning(f"serving on {host}: anyone who can reach this machine on port {port} can "
                    f"see {what}; use --host 127.0.0.1 to keep it local")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen there ({e.strerror}); pass another {flag} "
                               "or --host", f"{host}:{port}") from None
    return sock
