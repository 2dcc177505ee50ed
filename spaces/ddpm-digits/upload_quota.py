# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The bound on what uploads keep on disk: gradio's upload route runs outside the queue, and starlette's
RequestBodyLimitMiddleware bounds one request's body, not the cache folder's total."""

import contextlib
import os

from starlette.responses import PlainTextResponse

MAX_UPLOAD_BYTES = 2 * 2**20  # a bigger file: refused by gradio (launch's max_file_size); a bigger request: here
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # one upload request: the image and its multipart framing, nothing more
CLOSE = {"Connection": "close"}  # a refusal closes the connection: the rest of the body is not read


class UploadQuota:
    """
    ASGI middleware reading each upload request's body itself, counting the bytes received (a Content-Length header
    may lie, or be overruled by chunked encoding): 413 as soon as it is over `MAX_UPLOAD_BYTES` and its framing, 507
    when it would bring gradio's cache folder, plus the uploads in flight, over `max_cache_bytes`.
    """

    def __init__(self, app, cache_dir: str, max_cache_bytes: int):
        self.app, self.cache_dir, self.max_cache_bytes = app, cache_dir, max_cache_bytes
        self.in_flight = 0  # bytes admitted but maybe not yet on disk; one event loop: no lock needed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        chunks, size, more_body = [], 0, True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more_body = message.get("more_body", False)
            if size > MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES:
                too_large = f"Uploads are limited to {MAX_UPLOAD_BYTES // 2**20} MB."
                return await PlainTextResponse(too_large, 413, CLOSE)(scope, receive, send)
        if folder_bytes(self.cache_dir) + self.in_flight + size > self.max_cache_bytes:
            full = "The Space's upload space is full; try again in a few minutes."
            return await PlainTextResponse(full, 507, CLOSE)(scope, receive, send)
        self.in_flight += size  # checked and reserved with no await in between
        body = iter([{"type": "http.request", "body": b"".join(chunks), "more_body": False}])

        async def replay():  # the body once, then what the client sends next (a disconnect)
            return next(body, None) or await receive()

        try:
            await self.app(scope, replay, send)  # returns after gradio's background move into the cache
        finally:
            self.in_flight -= size


def folder_bytes(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile by the cache sweep
                total += os.lstat(os.path.join(root, name)).st_size
    return total
