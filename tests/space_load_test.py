"""A burst of concurrent users against the demo Space, and the server's peak memory.

Used by tests/test_space.py, and runnable against any running copy of the app:

    python spaces/ddpm-digits/app.py &                        # serves on 127.0.0.1:7860
    python tests/space_load_test.py http://127.0.0.1:7860 --clients 20 --pid $!

`upload_burst` does the same with junk uploads, which gradio handles outside the queue, and `chunked_upload` sends one
with a lying Content-Length: tests/test_space.py uses them to check the app's bounds on what it accepts and keeps on
disk.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BurstResult:
    """
    Args:
        outputs (`list[str | None]`): per client, the path of the image it received (None where it failed).
        errors (`list[BaseException | None]`): per client, the exception it raised.
        seconds (`list[float]`): per client, the time from its start to its answer.
        wall_seconds (`float`): the whole burst.
    """

    outputs: list[str | None]
    errors: list[BaseException | None]
    seconds: list[float]
    wall_seconds: float
    failures: list[int] = field(init=False)

    def __post_init__(self):
        self.failures = [i for i, error in enumerate(self.errors) if error is not None]


def peak_rss_bytes(pid: int) -> int:
    """The peak resident set size of a process (VmHWM in /proc/<pid>/status), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def run_burst(url: str, requests: list[tuple], api_name: str = "/generate", download_dir: str | None = None):
    """
    One thread and one `gradio_client.Client` per request, all released at once by a barrier, each calling
    `api_name` with its arguments.

    Returns:
        [`BurstResult`]
    """
    from gradio_client import Client

    num = len(requests)
    outputs: list[str | None] = [None] * num
    errors: list[BaseException | None] = [None] * num
    seconds = [0.0] * num
    barrier = threading.Barrier(num)

    def user(i: int) -> None:
        try:
            downloads = {"download_files": download_dir} if download_dir else {}
            client = Client(url, verbose=False, analytics_enabled=False, **downloads)
            barrier.wait(timeout=120)  # every client connected: now they all ask at once
            start = time.perf_counter()
            outputs[i] = client.predict(*requests[i], api_name=api_name)
            seconds[i] = time.perf_counter() - start
        except BaseException as error:  # reported per client; the burst goes on
            errors[i] = error
            barrier.abort()

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(num)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return BurstResult(outputs, errors, seconds, time.perf_counter() - start)


def upload_burst(url: str, payloads: list[list[bytes]], timeout: float = 120) -> list[int]:
    """
    One thread per request, released at once, each POSTing its files (multipart, as the page does) to gradio's upload
    route, which runs outside the queue. Returns each request's HTTP status.
    """
    import httpx

    statuses = [0] * len(payloads)
    barrier = threading.Barrier(len(payloads))

    def user(i: int) -> None:
        files = [("files", (f"junk-{i}-{j}.png", data, "image/png")) for j, data in enumerate(payloads[i])]
        with httpx.Client(timeout=timeout) as client:
            barrier.wait(timeout=timeout)
            statuses[i] = client.post(f"{url}/gradio_api/upload", files=files).status_code

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return statuses


def chunked_upload(url: str, files: list[bytes], content_length: int | None = None) -> int | None:
    """
    POST `files` to gradio's upload route over a raw socket, as a multipart body in chunked transfer encoding, with a
    `Content-Length: content_length` header too when given (which chunked encoding overrules). Returns the HTTP
    status, or None when the server closed the connection without one.
    """
    address = urllib.parse.urlsplit(url)
    boundary = "hf-ddpm-upload-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="junk-{i}.png"\r\n'.encode()
        + b"Content-Type: image/png\r\n\r\n"
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = [
        "POST /gradio_api/upload HTTP/1.1",
        f"Host: {address.netloc}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        "Transfer-Encoding: chunked",
        *([f"Content-Length: {content_length}"] if content_length is not None else []),
        "Connection: close",
    ]
    response = bytearray()
    with socket.create_connection((address.hostname, address.port), timeout=60) as sock:

        def read() -> None:  # the answer may come before the whole body is sent
            with contextlib.suppress(OSError):
                while data := sock.recv(65536):
                    response.extend(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        with contextlib.suppress(OSError):  # the server may answer and close before the whole body is sent
            sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n")
            for start in range(0, len(body), 65536):
                chunk = body[start : start + 65536]
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        reader.join(timeout=60)
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", bytes(response))
    return int(status[1]) if status else None


def folder_bytes(folder: str | Path) -> int:
    """The bytes of every file below `folder`."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the running app, e.g. http://127.0.0.1:7860")
    parser.add_argument("--clients", type=int, default=20, help="concurrent users, one generation each")
    parser.add_argument("--num_images", type=int, default=16, help="images per generation")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps per generation")
    parser.add_argument("--variance_type", default="fixed_small", help="a variance type the model offers")
    parser.add_argument("--pid", type=int, help="the server's process id, to report its peak memory")
    args = parser.parse_args()
    requests = [(i, args.num_images, args.steps, args.variance_type) for i in range(args.clients)]
    result = run_burst(args.url, requests)
    latencies = sorted(result.seconds[i] for i in range(args.clients) if i not in result.failures)
    print(f"{args.clients - len(result.failures)}/{args.clients} served in {result.wall_seconds:.1f} s")
    if latencies:
        print(f"latency: median {latencies[len(latencies) // 2]:.1f} s, max {latencies[-1]:.1f} s")
    for i in result.failures:
        print(f"client {i}: {type(result.errors[i]).__name__}: {result.errors[i]}")
    if args.pid:
        print(f"server peak RSS (VmHWM): {peak_rss_bytes(args.pid) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
