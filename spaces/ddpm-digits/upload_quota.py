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
    ASGI middleware bounding gradio's upload route: a request larger than `max_upload_bytes` plus its framing (or
    without a Content-Length) gets 413/411, and an upload that would bring gradio's cache folder, plus the uploads
    still in flight, over `max_cache_bytes` gets 507, before any byte of it is read. The cache empties as gradio's
    `delete_cache` sweep removes old files.
    """

    def __init__(self, app, cache_dir: str, max_upload_bytes: int, max_cache_bytes: int):
        self.app, self.cache_dir = app, cache_dir
        self.max_upload_bytes, self.max_cache_bytes = max_upload_bytes, max_cache_bytes
        self.in_flight = 0  # bytes admitted but maybe not yet on disk; one event loop: no lock needed

    async def __call__(self, scope, receive, send):
        is_upload = scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload")
        if not is_upload:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        refusal = self.refusal(length)
        if refusal is not None:
            status, message = refusal
            response = PlainTextResponse(message, status_code=status, headers={"Connection": "close"})
            return await response(scope, receive, send)
        self.in_flight += int(length)  # checked and reserved with no await in between
        try:
            await self.app(scope, receive, send)  # returns after gradio's background move into the cache
        finally:
            self.in_flight -= int(length)

    def refusal(self, content_length: bytes) -> tuple[int, str] | None:
        if not content_length.isdigit():
            return 411, "Uploads must declare their size (Content-Length)."
        if int(content_length) > self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES:
            return 413, f"Uploads are limited to {self.max_upload_bytes // 2**20} MB."
        if folder_bytes(self.cache_dir) + self.in_flight + int(content_length) > self.max_cache_bytes:
            return 507, "The Space's upload space is full; try again in a few minutes."
        return None


def folder_bytes(folder: str) -> int:
    """The bytes of every file below `folder` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile by the cache sweep
                total += os.lstat(os.path.join(root, name)).st_size
    return total
