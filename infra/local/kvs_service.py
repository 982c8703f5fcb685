"""The local Kinesis Video Streams service: AWS's wire protocol on loopback, no AWS account.

    with LocalKvsService() as kvs:
        client = boto3.client("kinesisvideo", endpoint_url=kvs.endpoint_url, region_name=kvs.region)

It runs its own event loop on a background thread, so tests and the demo use it from plain,
blocking code. Requests signed with SigV4 are accepted whatever the credentials.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from pathlib import Path

from .control import ControlPlane
from .http import Handler, start_server
from .ingest import put_media
from .limits import Limits
from .media import get_media, get_media_for_fragment_list, list_fragments
from .ports import listen
from .store import StreamStore

log = logging.getLogger(__name__)
EXPIRY_INTERVAL_SECONDS = 5.0


class LocalKvsService:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1",
                 data_dir: str | Path | None = None, retention_seconds: float = 300.0,
                 limits: Limits | None = None):
        self.host = host
        self.port = port
        self.region = region
        self.data_dir = Path(data_dir) if data_dir else None
        self.retention_seconds = retention_seconds
        self.limits = limits or Limits()
        self.store: StreamStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "LocalKvsService":
        """Listen (here, so a port in use raises ports.CannotListen at once), then serve on a
        background thread."""
        sock = listen("kvs", self.host, self.port)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), name="local-kvs",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("local KVS service did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"local KVS service failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "LocalKvsService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def call(self, function, *args):
        """Run `function(*args)` on the service's loop (for tests that poke at the store)."""
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(function, *args), self._loop)
        return future.result(10)

    # --- inside the service thread ---------------------------------------------------------

    def _run(self, sock) -> None:
        try:
            asyncio.run(self._serve(sock))
        except BaseException as err:  # reported to start()
            sock.close()
            self._error = err
            self._ready.set()

    async def _serve(self, sock) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.store = StreamStore(self.region, self.data_dir, self.retention_seconds)
        routes = self._routes()
        server = await start_server(lambda method, path: routes.get(path) if method == "POST"
                                    else None, sock)
        expiry = asyncio.create_task(self._expire_forever())
        log.info("local Kinesis Video Streams service on %s", self.endpoint_url)
        self._ready.set()
        async with server:
            await self._stopped.wait()
            expiry.cancel()
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    def _routes(self) -> dict[str, Handler]:
        control = ControlPlane(self.store, lambda: self.endpoint_url)
        routes: dict[str, Handler] = {
            path: control.handler(op) for path, op in control.operations().items()}
        for path, handler in {"/putMedia": put_media, "/getMedia": get_media,
                              "/listFragments": list_fragments,
                              "/getMediaForFragmentList": get_media_for_fragment_list}.items():
            routes[path] = functools.partial(handler, self.store, self.limits)
        return routes

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)
            self.store.expire_all(int(time.time() * 1000))


async def _as_coroutine(function, *args):
    return function(*args)
