# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The bound on what uploads may keep on disk. Gradio's upload route runs outside the queue, so this middleware, not the
queue, is what keeps a burst of uploads from filling the disk. Hand-written because starlette's
RequestBodyLimitMiddleware bounds one request's body only (and every route's), not the cache folder's total.
"""

import contextlib
import os

from starlette.responses import PlainTextResponse

MULTIPART_OVERHEAD_BYTES = 64 * 1024  # one upload request: the image and its multipart framing, nothing more


class UploadQuota:
    """
    ASGI middleware bounding gradio's upload route. It reads the request body itself, counting the bytes received
    (a Content-Length header may lie, or be overruled by chunked encoding): a body over `max_upload_bytes` plus its
    framing gets 413 as soon as it is over, and one that would bring gradio's cache folder, plus the uploads still
    in flight, over `max_cache_bytes` gets 507; only then does gradio see the body. The cache empties as gradio's
    `delete_cache` sweep removes old files.
    """

    def __init__(self, app, cache_dir: str, max_upload_bytes: int, max_cache_bytes: int):
        self.app, self.cache_dir = app, cache_dir
        self.max_request_bytes = max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        self.max_upload_bytes, self.max_cache_bytes = max_upload_bytes, max_cache_bytes
        self.in_flight = 0  # bytes admitted but maybe not yet on disk; one event loop: no lock needed

    async def __call__(self, scope, receive, send):
        is_upload = scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload")
        if not is_upload:
            return await self.app(scope, receive, send)
        chunks, size, more_body = [], 0, True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more_body = message.get("more_body", False)
            if size > self.max_request_bytes:
                too_large = refusal(413, f"Uploads are limited to {self.max_upload_bytes // 2**20} MB.")
                return await too_large(scope, receive, send)
        if folder_bytes(self.cache_dir) + self.in_flight + size > self.max_cache_bytes:
            full = refusal(507, "The Space's upload space is full; try again in a few minutes.")
            return await full(scope, receive, send)
        self.in_flight += size  # checked and reserved with no await in between
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay():
            nonlocal body
            message, body = body, None
            return message or await receive()  # the body once, then what the client sends next (a disconnect)

        try:
            await self.app(scope, replay, send)  # returns after gradio's background move into the cache
        finally:
            self.in_flight -= size


def refusal(status: int, message: str) -> PlainTextResponse:
    """An answer that closes the connection: the rest of the body is not read."""
    return PlainTextResponse(message, status_code=status, headers={"Connection": "close"})


def folder_bytes(folder: str) -> int:
    """The bytes of every file below `folder` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile by the cache sweep
                total += os.lstat(os.path.join(root, name)).st_size
    return total
