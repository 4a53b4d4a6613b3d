"""The search server: a FastAPI app over a :class:`~polymodal.search.query.Searcher`, and its web page.

Endpoints (OpenAPI spec at ``/openapi.json``)::

    GET  /                          the web page (static files are served from memory, no CDN)
    GET  /api/info                  index size, generation, model id, vector index kind and recall
    GET  /api/search?q=TEXT         text → image            (k, label, prefix filters)
    POST /api/search/image          uploaded image → image  (multipart field "file"; k, label, prefix)
    POST /api/zeroshot              uploaded image → label probabilities (labels=a,b,c or the index's list)
    GET  /api/items/{id}            one item's metadata
    GET  /api/items/{id}/thumbnail  its thumbnail (stored in the index at build time)

What reaches the file system: nothing a client names. Items are looked up by integer id in the index's
database, thumbnails come from that database, and the page's three static files are read once at start-up
into a dict keyed by name. Uploads are limited in bytes while the body is still arriving (:class:`_BodyLimit`),
and then in type and pixels (:mod:`polymodal.search.uploads`). Every error is JSON
``{"error": message, "status": code}``; an unexpected exception is logged here and answered with a bare 500.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at run time, and
# the Query aliases they use (K, Label, ...) are local to create_app.
import functools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import torch
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from polymodal.core.threads import single_threaded, use_threads
from polymodal.errors import ConfigError, PolymodalError
from polymodal.search.index import Hit, ItemFilter
from polymodal.search.query import MAX_LABELS, LabelsNotReady, Searcher
from polymodal.search.uploads import UploadError, UploadLimits, check_upload

log = logging.getLogger("polymodal.search.server")
T = TypeVar("T")

STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# The page may load only its own scripts, styles and images: no CDN, no inline script.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
_MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and part headers around the file
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


@dataclass
class ServerConfig:
    """Limits of the server.

    Args:
        uploads: size, pixel and type limits of uploaded images.
        max_k: most results one request may ask for.
        reload_every: seconds between checks for a newer index generation (an `index add` while serving).
        allowed_hosts: the names (or addresses) a request's ``Host`` may carry; anything else is refused,
            since after DNS rebinding an attacker's page reaches this server under its own name.
        allow_ip_hosts: also accept any IP address as ``Host`` (for a server bound to 0.0.0.0 or ::, whose
            addresses are not known in advance; an IP literal cannot be an attacker's rebound name).
        query_threads: worker threads for text queries, metadata and thumbnails.
        model_threads: intra-op threads of the text lane, the one thread that runs the text tower with
            more than one (default: torch's count when the app is created); every other thread uses one.
    """

    uploads: UploadLimits = None  # type: ignore[assignment]
    max_k: int = 100
    reload_every: float = 1.0
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allow_ip_hosts: bool = False
    query_threads: int = 8
    model_threads: int | None = None

    def __post_init__(self) -> None:
        if self.uploads is None:
            self.uploads = UploadLimits()
        if self.max_k < 1:
            raise ConfigError(f"max_k must be >= 1, got {self.max_k}")
        if self.query_threads < 1:
            raise ConfigError(f"query_threads must be >= 1, got {self.query_threads}")
        if self.model_threads is not None and self.model_threads < 1:
            raise ConfigError(f"model_threads must be >= 1, got {self.model_threads}")
        bad = [h for h in self.allowed_hosts if not _valid_name(_normal_name(h))]
        if bad:
            raise ConfigError(f"allowed_hosts: {bad[0]!r} is not a host name or address")


def create_app(searcher: Searcher, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``searcher`` and the web page."""
    config = config or ServerConfig()
    limits = config.uploads
    static = _load_static()
    # One thread holds the cores for the text tower; request threads run torch and faiss single-threaded
    # (a second OpenMP team would make every pass 2-3x slower: polymodal.core.threads).
    model_threads = config.model_threads or torch.get_num_threads()
    searcher.dedicate_text_thread(model_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lanes.open()  # anyio's limiters belong to the running event loop
        warmer.start(searcher)  # the index's own zero-shot labels, embedded before the first upload needs them
        yield
        torch.set_num_threads(model_threads)  # request threads set 1; threads started later inherit that

    app = FastAPI(
        lifespan=lifespan,
        title="polymodal search",
        version="1",
        description="Cross-modal search over a polymodal index: text → image, image → image, zero-shot labels.",
        docs_url=None,  # Swagger UI and ReDoc pull their scripts from a CDN; the spec itself stays
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    warmer = _LabelWarmer()
    reloader = _Reloader(searcher, config.reload_every, on_reload=warmer.start)
    lanes = _Lanes(config.query_threads, limits.max_decodes)
    K = Annotated[int, Query(ge=1, le=config.max_k, description="number of results")]
    Label = Annotated[str | None, Query(max_length=200, description="only items with this label")]
    Prefix = Annotated[str | None, Query(max_length=4096, description="only items whose path starts with this")]
    Upload = Annotated[UploadFile, File(description="PNG, JPEG, GIF, WebP or BMP image")]

    # ------------------------------------------------------------- errors as JSON
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(PolymodalError)
    async def _bad_input(request: Request, exc: PolymodalError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(LabelsNotReady)
    async def _not_ready(request: Request, exc: LabelsNotReady) -> JSONResponse:
        response = _error(503, str(exc))
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(UploadError)
    async def _bad_upload(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error while serving %s %s", request.method, request.url.path)
        return _error(500, "internal server error")

    # ------------------------------------------------------------- page
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(static["index.html"][0])

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in STATIC_FILES:  # a fixed set of names: nothing from the URL reaches the disk
            raise HTTPException(404, "not found")
        data, mime = static[name]
        return Response(data, media_type=mime, headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------- API
    # Every endpoint is async and hands its blocking work (model passes, faiss, SQLite, index reloads) to
    # a bounded lane of worker threads, so the event loop only parses requests and writes answers.
    @app.get("/api/info", summary="Index size, model and vector index")
    async def info() -> dict[str, Any]:
        def work() -> dict[str, Any]:
            s = reloader.get()
            gen = s.index.info
            defaults = s.index.default_labels()
            return {"count": gen.count, "generation": gen.generation, "model_id": gen.model_id, "dim": gen.dim,
                    "ann": gen.ann.to_dict(), "labels": s.index.labels(), "default_labels": defaults,
                    "zeroshot_labels": len(defaults), "zeroshot_labels_ready": s.labels_ready(defaults),
                    "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                               "max_k": config.max_k, "max_labels": MAX_LABELS, "formats": list(limits.formats)}}

        return await lanes.run(lanes.queries, work)

    @app.get("/api/search", summary="Text → image search")
    async def search_text(
        q: Annotated[str, Query(min_length=1, max_length=1000, description="the query sentence")],
        k: K = 20,
        label: Label = None,
        prefix: Prefix = None,
    ) -> dict[str, Any]:
        where = ItemFilter(label=label, path_prefix=prefix)
        hits = await lanes.run(lanes.queries, lambda: reloader.get().by_text(q, k=k, where=where))
        return {"query": q, "hits": [_hit_json(h) for h in hits]}

    @app.post("/api/search/image", summary="Image → image search (upload)")
    async def search_image(file: Upload, k: K = 20, label: Label = None, prefix: Prefix = None) -> dict[str, Any]:
        data = await _read_upload(file, limits)
        where = ItemFilter(label=label, path_prefix=prefix)

        def search() -> list[Any]:
            # Decoded (reduced to the model's input size, as `index build` decodes files), embedded and
            # dropped inside one decode slot: the pixels held at once stay bounded.
            s = reloader.get()
            return s.by_image(check_upload(data, limits, name="file", min_size=s.decode_size), k=k, where=where)

        hits = await lanes.run(lanes.decodes, search)
        return {"hits": [_hit_json(h) for h in hits]}

    @app.post("/api/zeroshot", summary="Zero-shot labels of an uploaded image",
              responses={503: {"description": "the index's default labels are still being embedded"}})
    async def zeroshot(
        file: Upload,
        labels: Annotated[str | None, Query(max_length=20000, description=f"comma-separated labels (at most "
                                            f"{MAX_LABELS}); default: the index's label list")] = None,
        top: Annotated[int | None, Query(ge=1, description="return only the best `top` labels")] = None,
    ) -> dict[str, Any]:
        data = await _read_upload(file, limits)
        given = None if labels is None else labels.split(",")

        def choose() -> tuple[Searcher, list[str]]:
            s = reloader.get()
            return s, s.zeroshot_labels(given)

        s, names = await lanes.run(lanes.queries, choose)
        # Label embedding is the long part; one request at a time does it, beside the query lane.
        w = await lanes.run(lanes.labels, lambda: s.label_classifier(names, max_new=MAX_LABELS))
        ranked = await lanes.run(lanes.decodes, lambda: s.rank_labels(
            s.embed_image(check_upload(data, limits, name="file", min_size=s.decode_size)), names, w))
        return {"labels": [r.to_dict() for r in ranked[:top]], "count": len(names)}

    @app.get("/api/items/{item_id}", summary="Metadata of one item")
    async def item(item_id: int) -> dict[str, Any]:
        it = await lanes.run(lanes.queries, lambda: reloader.get().index.get(item_id))
        if it is None:
            raise HTTPException(404, f"no item with id {item_id}")
        return {"id": it.id, "path": it.path, "caption": it.caption, "labels": it.labels, "hash": it.hash,
                "thumbnail": f"/api/items/{it.id}/thumbnail"}

    @app.get("/api/items/{item_id}/thumbnail", summary="Thumbnail of one item (JPEG)",
             responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(item_id: int) -> Response:
        found = await lanes.run(lanes.queries, lambda: reloader.get().index.thumbnail(item_id))
        if found is None:
            raise HTTPException(404, f"no item with id {item_id}")
        data, mime = found
        return Response(data, media_type=mime, headers={"Cache-Control": "max-age=3600"})

    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_BodyLimit, max_bytes=limits.max_bytes + _MULTIPART_OVERHEAD)
    # Added last, so it runs first: a request for another host is refused before its body is read.
    app.add_middleware(_HostGuard, hosts=config.allowed_hosts, any_ip=config.allow_ip_hosts)
    return app


def hosts_for_bind(bind: str, extra: tuple[str, ...] = ()) -> tuple[tuple[str, ...], bool]:
    """The ``(allowed_hosts, allow_ip_hosts)`` of a server bound to address ``bind``, plus ``extra`` names.

    Loopback answers to its loopback names; a specific address to itself; a wildcard (0.0.0.0, ::) to any
    IP address and this machine's own name (``socket.gethostname``, which reads no network).
    """
    import socket

    if bind in _WILDCARD_BINDS:
        return (*LOOPBACK_HOSTS, socket.gethostname(), *extra), True
    if bind in LOOPBACK_HOSTS or bind.startswith("127."):
        return (*LOOPBACK_HOSTS, bind, *extra), False
    return (bind, *extra), False


def serve(index_dir: str | Path, *, model_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          config: ServerConfig | None = None) -> None:
    """Open the index and its model, and serve until interrupted.

    ``config.allowed_hosts`` should name the hosts this bind answers to (:func:`hosts_for_bind`).
    """
    searcher, config = open_searcher(index_dir, model_dir, config)
    serve_searcher(searcher, host=host, port=port, config=config)


def open_searcher(index_dir: str | Path, model_dir: str | Path | None = None,
                  config: ServerConfig | None = None) -> tuple[Searcher, ServerConfig]:
    """Open the index and its model for serving, and the config with the text lane's thread count.

    The model loads with one intra-op thread: its first parallel copy would otherwise leave this thread an
    OpenMP team of its own, and every text-lane pass would run 2-3x slower beside it
    (:mod:`polymodal.core.threads`). The threads torch had go to the text lane (``model_threads``).

    Raises:
        PolymodalError: the index or its model cannot be opened (as :meth:`Searcher.open`).
    """
    config = config or ServerConfig()
    if config.model_threads is None:
        config = replace(config, model_threads=torch.get_num_threads())
    use_threads(1)
    return Searcher.open(index_dir, model_dir), config


def serve_searcher(searcher: Searcher, *, host: str = "127.0.0.1", port: int = 8000,
                   config: ServerConfig | None = None) -> None:
    """Serve an open searcher until interrupted.

    For the fastest text queries, load its model after ``polymodal.core.threads.use_threads(1)`` and
    pass the thread count it had as ``config.model_threads`` (what :func:`serve` does).
    """
    import uvicorn

    app = create_app(searcher, config)  # takes torch's thread count for the text lane before this thread drops to 1
    # Requests run in parallel threads, one query each; OpenMP fan-out inside a single query costs more in
    # synchronisation than it saves (20 ms instead of 1 ms per exact query at 10k items on 2 busy cores).
    use_threads(1)
    if host not in LOOPBACK_HOSTS:
        log.warning("serving on %s: reachable from other machines; there is no authentication", host)
    uvicorn.run(app, host=host, port=port, log_level="info")


# --- helpers -----------------------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _hit_json(h: Hit) -> dict[str, Any]:
    return {**h.to_dict(), "thumbnail": f"/api/items/{h.id}/thumbnail"}


async def _read_upload(file: UploadFile, limits: UploadLimits) -> bytes:
    data = await file.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"file: over the limit of {limits.max_bytes} bytes")
    return data


def _load_static() -> dict[str, tuple[bytes, str]]:
    root = resources.files("polymodal.search") / "static"
    out = {"index.html": ((root / "index.html").read_bytes(), "text/html; charset=utf-8")}
    for name, mime in STATIC_FILES.items():
        out[name] = ((root / name).read_bytes(), mime)
    return out


class _Reloader:
    """Hands out the searcher, reopening the index at most every ``every`` seconds if a newer generation exists."""

    def __init__(self, searcher: Searcher, every: float, on_reload: Callable[[Searcher], None]) -> None:
        self.searcher = searcher
        self.every = every
        self.on_reload = on_reload
        self._next = time.monotonic() + every
        self._lock = threading.Lock()

    def get(self) -> Searcher:
        now = time.monotonic()
        if now >= self._next and self._lock.acquire(blocking=False):
            try:
                self._next = now + self.every
                if self.searcher.reload_if_stale():
                    log.info("index reloaded at generation %d", self.searcher.index.generation)
                    self.on_reload(self.searcher)
            except PolymodalError as e:
                log.warning("keeping generation %d: %s", self.searcher.index.generation, e)
            finally:
                self._lock.release()
        return self.searcher


class _Lanes:
    """Where blocking work runs: bounded lanes of worker threads, never the event loop.

    ``queries``: text search, metadata, thumbnails, reloads (short SQLite and faiss work, many at once).
    ``labels``: embedding zero-shot labels, one request at a time (each may embed up to MAX_LABELS labels).
    ``decodes``: decoding an upload and embedding it; ``max_decodes`` at once bounds the decoded pixels held
    to ``max_decodes * max_pixels``, however many uploads arrive together (the others wait, holding only
    their encoded bytes).
    """

    def __init__(self, query_threads: int, max_decodes: int) -> None:
        self._sizes = (query_threads, max_decodes)

    def open(self) -> None:
        self.queries = anyio.CapacityLimiter(self._sizes[0])
        self.labels = anyio.CapacityLimiter(1)
        self.decodes = anyio.CapacityLimiter(self._sizes[1])

    async def run(self, lane: anyio.CapacityLimiter, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(_single_threaded, fn, *args), limiter=lane)


def _single_threaded(fn: Callable[..., T], *args: Any) -> T:
    single_threaded()
    return fn(*args)


class _LabelWarmer:
    """Embeds the index's default zero-shot labels in a background thread (at start and after a reload).

    A request may embed at most MAX_LABELS new labels; an index with more gets them here instead, and until
    then answers zero-shot with 503 (LabelsNotReady). The work goes through the searcher's label lane, one
    batch per pass, so requests' own label batches interleave with it.
    """

    def __init__(self) -> None:
        self._warmed: tuple[str, ...] | None = None

    def start(self, searcher: Searcher) -> None:
        threading.Thread(target=self._warm, args=(searcher,), name="label-warmup", daemon=True).start()

    def _warm(self, searcher: Searcher) -> None:
        single_threaded()
        try:
            names = searcher.zeroshot_labels(None)
        except PolymodalError:  # no labels at all: zero-shot needs them from the request
            return
        if tuple(names) == self._warmed:
            return
        self._warmed = tuple(names)
        try:
            searcher.label_classifier(names)
            log.info("embedded %d default zero-shot labels", len(names))
        except Exception:  # a background thread has no caller to tell: log it, requests embed on demand
            log.exception("embedding the default zero-shot labels failed")


# Every response carries these. Thumbnails and JSON stay out of other sites' <img> and <script> tags
# (Cross-Origin-Resource-Policy).
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", _CSP.encode()),
                     (b"referrer-policy", b"no-referrer"), (b"cross-origin-resource-policy", b"same-origin")]


class _SecurityHeaders:
    """ASGI wrapper: add :data:`_SECURITY_HEADERS` to every HTTP response.

    A plain ASGI wrapper rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware``
    streams each response through an extra task and memory channel, about a fifth of the event loop's
    time per search request at 8 clients (py-spy).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *_SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _BodyLimit:
    """ASGI wrapper: refuse request bodies over ``max_bytes`` with 413 before the app sees them.

    A ``Content-Length`` over the limit is refused before the body is read. Otherwise the body is read
    here, counting bytes as they arrive, and cut off as soon as it passes the limit (a chunked upload
    cannot make the server spool an unbounded file); a body within the limit is replayed to the app.
    Buffering is fine at this size: the limit is a few MB.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_error(send, 413, f"request body over the limit of {self.max_bytes} bytes")
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _send_error(send, 413, f"request body over the limit of {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


class _HostGuard:
    """ASGI wrapper: answer only requests for this server's own hosts, and uploads only from its own pages.

    ``Host`` must be one of ``hosts`` (or an IP address with ``any_ip``): a DNS-rebinding page reaches the
    server under the attacker's name, so its requests are refused (421) and it never reads results, paths
    or thumbnails. A request that changes state or uploads (any method but GET/HEAD/OPTIONS) from a
    browser carries ``Origin``; it must name the same host and port as ``Host`` (403 otherwise), so another
    site's form cannot make the server decode and embed uploads. Clients without ``Origin`` (curl, scripts)
    are not browsers and pass.
    """

    def __init__(self, app: Any, hosts: tuple[str, ...], any_ip: bool) -> None:
        self.app = app
        self.hosts = {_normal_name(h) for h in hosts}
        self.any_ip = any_ip

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get(b"host", "")
        parsed = _split_host(host)
        if parsed is None or not self._allowed(parsed[0]):
            names = ", ".join(sorted(self.hosts)) + (", any IP address" if self.any_ip else "")
            await _send_error(send, 421, f"host {host[:100]!r} is not one this server answers to ({names}); "
                                         "serve with --allow-host NAME to add one")
            return
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method") not in ("GET", "HEAD", "OPTIONS") \
                and not _same_origin(origin, parsed):
            await _send_error(send, 403, f"origin {origin[:100]!r} may not send {scope.get('method')} requests "
                                         "here: only this server's own page may upload")
            return
        await self.app(scope, receive, send)

    def _allowed(self, name: str) -> bool:
        return name in self.hosts or (self.any_ip and _is_ip(name))


def _normal_name(name: str) -> str:
    """A host name compared as DNS compares it: case-insensitive, without the root's trailing dot."""
    return name.strip().lower().rstrip(".")


def _split_host(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a ``Host`` value (``name``, ``name:port``, ``[v6]:port``), or None if malformed."""
    value = value.strip()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or not _is_ip(name):
            return None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
        if not _valid_name(name):
            return None
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return _normal_name(name), int(rest[1:]) if rest else None


def _valid_name(name: str) -> bool:
    """A DNS name or an IP address (IPv6 unbracketed, as written in configuration)."""
    return _is_ip(name) or (bool(name) and all(c.isascii() and (c.isalnum() or c in "-.") for c in name))


def _same_origin(origin: str, host: tuple[str, int | None]) -> bool:
    """Whether an ``Origin`` header names the host and port of ``Host`` (``null`` and file: never do)."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(origin)
        port = url.port
    except ValueError:
        return False
    if url.scheme not in ("http", "https") or not url.hostname:
        return False
    name, host_port = host
    origin_port = port if port is not None else {"http": 80, "https": 443}[url.scheme]
    if host_port is None:  # Host without a port: the scheme's default one
        return _normal_name(url.hostname) == name and origin_port in (80, 443)
    return _normal_name(url.hostname) == name and origin_port == host_port


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
