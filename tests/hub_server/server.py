"""HTTP transport of the fake Hub (standard library ``ThreadingHTTPServer``) and the :class:`HubServer` test handle.

The standard library server is used instead of an ASGI stack because the network faults need raw control of the
socket: a "dropped" download really sends the headers and part of the body and then closes the TCP connection, and
an "aborted" commit closes it without any response, exactly what a flaky network or a crashed server does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from huggingface_hub import constants, hf_api

from .app import HubApp, Request, Response, json_response
from .faults import FaultRule, Faults, RequestLog, RequestRecord
from .storage import Storage

CHUNK_SIZE = 256 * 1024
CONTROL_PREFIX = "/_test/"
# Variables that env()/configure() own: inherited values would make tests depend on the developer's shell.
_CLIENT_ENV_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_XET",
    "HUGGINGFACE_CO_STAGING",
)


class _HTTPServer(ThreadingHTTPServer):
    """Threading server that remembers open connections so that ``stop()`` can cut keep-alive clients off."""

    daemon_threads = True
    allow_reuse_address = True  # restart on the same port after stop(), so URLs handed out stay valid

    def __init__(self, address: tuple[str, int], hub: HubServer) -> None:
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, injected drops, stop()) are expected here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for conn in connections:
            _hard_close(conn)


def _hard_close(conn: socket.socket) -> None:
    """Close a client socket for real (shutdown first, so the peer sees the connection end immediately)."""
    with contextlib.suppress(OSError):  # already closed by the peer
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, applies faults, asks :class:`HubApp` for the response and writes it."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the connection may already be closed by a fault or stop()
            super().finish()
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read the structured request log instead

    def do_GET(self) -> None:  # the base class dispatches on do_<METHOD>
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, up to the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        hub = self.server.hub
        raw_path, _, query = self.path.partition("?")
        # The body is always read first so the keep-alive stream stays in sync, whatever the answer is.
        request = Request(
            method=self.command,
            raw_path=raw_path,
            query=parse_qs(query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._read_body(),
        )
        path = unquote(raw_path)
        if path.startswith(CONTROL_PREFIX):
            self._send(hub._control(request, path))
            return
        response = self._answer(request, path)
        # Logged before answering: once the client has the answer, the test may already be reading the log.
        hub.log.append(
            RequestRecord(
                method=self.command,
                path=path,
                query=query,
                status=response.status,
                range=request.headers.get("range"),
                fault=response.fault,
                authenticated="authorization" in request.headers,
            )
        )
        self._send(response)

    def _answer(self, request: Request, path: str) -> Response:
        """The app's response, with the armed "slow", "fail" and "drop" faults applied."""
        faults = self.server.hub.faults
        slow = faults.take("slow", self.command, path)
        if slow is not None:
            time.sleep(slow.seconds)
        fail = faults.take("fail", self.command, path)
        if fail is not None:
            response = json_response(fail.status, {"error": f"Injected fault: HTTP {fail.status}"})
            response.fault = "fail"
            return response
        response = self.server.hub.app.handle(request)
        if slow is not None:
            response.fault = response.fault or "slow"
        drop = faults.take("drop", self.command, path) if response.file is not None else None
        if drop is not None:
            response.fault = "drop"
            response.drop_after = drop.after_bytes if drop.after_bytes is not None else response.length // 2
        return response

    def _send(self, response: Response) -> None:
        if response.abort:
            self.close_connection = True
            _hard_close(self.connection)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(response.content_length))
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.file is None:
            self.wfile.write(response.body)
        else:
            self._send_file(response)

    def _send_file(self, response: Response) -> None:
        assert response.file is not None
        budget = response.length if response.drop_after is None else min(response.drop_after, response.length)
        with open(response.file, "rb") as f:
            f.seek(response.offset)
            while budget > 0:
                chunk = f.read(min(CHUNK_SIZE, budget))
                if not chunk:
                    break
                self.wfile.write(chunk)
                budget -= len(chunk)
        if response.drop_after is not None:
            # Headers promised more bytes than were sent: closing now is a truncated download for the client.
            self.wfile.flush()
            self.close_connection = True
            _hard_close(self.connection)


class HubServer:
    """A local Hugging Face Hub for tests, like moto for AWS.

    Start it, point ``huggingface_hub`` at :attr:`url` (see :meth:`configure` / :meth:`env`), authenticate with
    :attr:`token`, arm faults with :meth:`fail_next`, :meth:`drop_next_download`, :meth:`slow_down`,
    :meth:`abort_next_commit`, :meth:`lose_next_commit_answer`, and inspect :attr:`requests`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        user: str = "test-user",
        token: str | None = None,
        orgs: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.root = Path(root)
        self.user = user
        self.token = token or f"hf_test_token_{secrets.token_hex(8)}"
        self.host = host
        self.port = port
        self.store = Storage(self.root / "storage")
        self.faults = Faults()
        self.log = RequestLog()
        self.app = HubApp(self.store, self.faults, tokens={self.token: user}, orgs={user: list(orgs or [])})
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.cache_dir = self.root / "hf_home" / "hub"  # hub cache used by env()/configure() unless told otherwise
        self._repo_counter = 0
        self._counter_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:<port>``), stable across stop()/start()."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> HubServer:
        """Start serving in a background thread (on a free port the first time, then on the same port)."""
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self.app.base_url = self.url
        # A short poll interval keeps stop() fast (shutdown() waits for the serving loop to notice).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hf-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections: clients now get "connection refused", as when offline."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers

    @property
    def lfs_threshold(self) -> int | None:
        """Preupload answers "lfs" for files of at least this many bytes (``None``, the default: always "regular").

        Only set it when the client has Xet disabled (``HF_HUB_DISABLE_XET=1``): with ``hf_xet`` installed the client
        uploads "lfs" files through the Xet protocol, which this server does not speak.
        """
        return self.app.lfs_threshold

    @lfs_threshold.setter
    def lfs_threshold(self, value: int | None) -> None:
        self.app.lfs_threshold = value

    def add_user(self, name: str, *, orgs: list[str] | None = None, token: str | None = None) -> str:
        """Register another user (e.g. to check that someone else's private repo is invisible); returns its token."""
        token = token or f"hf_test_token_{secrets.token_hex(8)}"
        self.app.tokens[token] = name
        self.app.orgs[name] = list(orgs or [])
        return token

    def new_repo_id(self, name: str = "repo") -> str:
        """A repo id in the test user's namespace that no other test uses (the server outlives tests)."""
        with self._counter_lock:
            self._repo_counter += 1
            return f"{self.user}/{name}-{self._repo_counter}"

    @property
    def requests(self) -> list[RequestRecord]:
        """Requests answered so far (control endpoints excluded), oldest first."""
        return self.log.records()

    def requests_matching(self, method: str | None = None, path_contains: str | None = None) -> list[RequestRecord]:
        return [
            r
            for r in self.log.records()
            if (method is None or r.method == method.upper()) and (path_contains is None or path_contains in r.path)
        ]

    def clear_requests(self) -> None:
        self.log.clear()

    def reset(self) -> None:
        """Disarm all faults, clear the request log and restore "regular" uploads (repos are kept)."""
        self.faults.clear()
        self.log.clear()
        self.lfs_threshold = None

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path_prefix: str | None = None,
        path_contains: str | None = None,
    ) -> FaultRule:
        """Answer the next ``count`` matching requests with HTTP ``status`` (a JSON error body)."""
        rule = FaultRule("fail", count, method, path_prefix, path_contains, status=status)
        return self.faults.add(rule)

    def drop_next_download(
        self, count: int = 1, *, after_bytes: int | None = None, path_contains: str | None = None
    ) -> FaultRule:
        """Truncate the next ``count`` file downloads (GET .../resolve/...): send the headers and ``after_bytes`` of
        the body (default: half of it), then close the TCP connection."""
        rule = FaultRule("drop", count, "GET", None, path_contains, after_bytes=after_bytes)
        return self.faults.add(rule)

    def slow_down(
        self,
        seconds: float,
        count: int | None = None,
        *,
        method: str | None = None,
        path_prefix: str | None = None,
        path_contains: str | None = None,
    ) -> FaultRule:
        """Sleep ``seconds`` before answering the next ``count`` matching requests (``None``: until reset)."""
        rule = FaultRule("slow", count, method, path_prefix, path_contains, seconds=seconds)
        return self.faults.add(rule)

    def abort_next_commit(self, count: int = 1, *, path_contains: str | None = None) -> FaultRule:
        """Receive the next ``count`` commits fully, store their blobs, then close the connection without
        answering and without moving the branch (a push interrupted before it was published)."""
        return self.faults.add(FaultRule("abort_commit", count, "POST", None, path_contains))

    def lose_next_commit_answer(self, count: int = 1) -> FaultRule:
        """Publish the next ``count`` commits, then close the connection without answering (the answer was lost)."""
        return self.faults.add(FaultRule("lose_commit_answer", count, "POST"))

    def _control(self, request: Request, path: str) -> Response:
        """``/_test/faults`` (POST: arm a rule from JSON, DELETE: disarm all) and ``/_test/requests`` (GET, DELETE)."""
        if path == "/_test/faults" and request.method == "POST":
            spec = request.json()
            rule = FaultRule(**{k: v for k, v in spec.items() if k in FaultRule.__dataclass_fields__})
            self.faults.add(rule)
            return json_response(200, {"armed": rule.__dict__})
        if path == "/_test/faults" and request.method == "DELETE":
            self.faults.clear()
            return json_response(200, {})
        if path == "/_test/requests" and request.method == "GET":
            return json_response(200, [record.__dict__ for record in self.log.records()])
        if path == "/_test/requests" and request.method == "DELETE":
            self.log.clear()
            return json_response(200, {})
        return json_response(404, {"error": f"Unknown control endpoint {request.method} {path}"})

    # ------------------------------------------------------------------ pointing clients at the server

    def env(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        offline: bool = False,
        token: bool = True,
        disable_xet: bool = False,
        base: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a subprocess using this server: ``base`` (default ``os.environ``) plus the HF variables.

        ``HF_HOME``/``HF_HUB_CACHE`` go to a private folder (``cache_dir`` is the hub cache if given, else
        :attr:`cache_dir`, which :meth:`configure` sets) so the subprocess never touches the user's real cache or
        token. ``token=False`` leaves ``HF_TOKEN`` unset (anonymous client); ``disable_xet=True`` sets
        ``HF_HUB_DISABLE_XET=1`` (the legacy upload path, needed for :attr:`lfs_threshold`); ``offline=True`` sets
        ``HF_HUB_OFFLINE=1``. Use it as ``subprocess.run(..., env=hub.env())``.
        """
        env = dict(os.environ if base is None else base)
        for name in _CLIENT_ENV_VARS:
            env.pop(name, None)
        hf_home = self.root / "hf_home"
        env.update(
            HF_ENDPOINT=self.url,
            HF_HOME=str(hf_home),
            HF_HUB_CACHE=str(cache_dir if cache_dir is not None else self.cache_dir),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        if disable_xet:
            env["HF_HUB_DISABLE_XET"] = "1"
        if token:
            env["HF_TOKEN"] = self.token
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def configure(
        self,
        monkeypatch: Any,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        token: bool = True,
        disable_xet: bool = False,
    ) -> None:
        """Point the already-imported ``huggingface_hub`` of this process at the server, undone by ``monkeypatch``.

        ``huggingface_hub`` reads ``HF_ENDPOINT`` & co. once, at import time, into ``constants`` (and the module-level
        ``HfApi`` behind ``huggingface_hub.upload_folder`` etc. copies the endpoint when created), so setting
        environment variables is not enough in-process: the constants themselves are patched here.
        """
        cache = Path(cache_dir) if cache_dir is not None else self.cache_dir
        monkeypatch.setattr(self, "cache_dir", cache)  # so that env() hands the same cache to subprocesses
        values = self.env(cache, token=token, disable_xet=disable_xet, base={})
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        for name in _CLIENT_ENV_VARS:
            if name not in values:
                monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HOME", values["HF_HOME"])
        monkeypatch.setattr(constants, "HF_XET_CACHE", str(Path(values["HF_HOME"]) / "xet"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", disable_xet)
        # Never fall back to a real token stored on the developer's machine.
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(self.root / "hf_home" / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(self.root / "hf_home" / "stored_tokens"))
        monkeypatch.setattr(hf_api.api, "endpoint", self.url)

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Context manager: the server is down inside the block and back up (same URL, same data) after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()
