# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What may be sent: the files a push picks, read once, and the checks on exactly those bytes (no link out of the
folder, no secret in a file's name, bytes or PNG chunks, every safetensors file complete)."""

import fnmatch
import os
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import get_stored_tokens, get_token
from safetensors import SafetensorError, deserialize

from .._errors import UsageError

PICKLE_PATTERNS = ["*.bin", "*.pkl", "*.pickle", "*.pt", "*.pth", "*.ckpt"]
# Never picked by any push, in any letter case (nor hidden files and folders, caches, virtual environments), unless a
# Space push names them in `include`.
CREDENTIAL_FILES = [
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    "*.netrc", "_netrc", "credentials", "credentials.json", "*.git-credentials", "token", "stored_tokens", "*.env",
    "kaggle.json", "*service?account*.json",
]  # fmt: skip
CACHE_FOLDERS = {"__pycache__", "venv", "flagged"}
TOKEN_SHAPE = r"hf_[A-Za-z0-9]{30,}"
# Secrets by their shape, in any file whatever its name or type, even glued to other text ("export MY_hf_...").
SECRET_SHAPES = {
    "a Hugging Face access token": re.compile(TOKEN_SHAPE.encode()),
    "a private key": re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY"),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A compressed PNG chunk is inflated up to this many bytes: one that holds more, or is corrupt, cannot be scanned.
PNG_CHUNK_LIMIT = 16 * 2**20


def walk(folder: Path) -> list[str]:
    """Every file and link below `folder` (links to folders are listed, not followed), as sorted POSIX paths."""
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_symlink() or path.is_file()
    )


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether `path` matches a pattern; a pattern spans exactly as many folders as it names ("*.py" is root-only)."""
    # not huggingface_hub's filter_repo_objects: there "*" spans folders, so "*.py" would pick scheduler/x.py too
    depth = path.count("/")
    return any(pattern.count("/") == depth and fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def never_sent(path: str) -> bool:
    """Hidden (a name or folder starting with "."), a cache, or named like a credential (keys, .netrc, tokens)."""
    *folders, name = path.split("/")
    hidden = any(part.startswith(".") for part in (*folders, name))
    credential = any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in CREDENTIAL_FILES)
    return hidden or credential or bool(CACHE_FOLDERS.intersection(folders)) or name.endswith(".pyc")


def scanned_files(folder: Path, paths: Iterable[str], token: str | None = None) -> dict[str, bytes]:
    """The bytes of each file, read once and checked (`check_files`): the bytes checked are the bytes sent. A link is
    read only if it leads to a file of `folder` that is sent itself."""
    root = folder.resolve()
    files = {}
    for path in paths:
        link, target = folder / path, (folder / path).resolve()
        inside = target.is_relative_to(root) and not never_sent(target.relative_to(root).as_posix())
        if link.is_symlink() and (target.is_dir() or not inside):
            raise UsageError(
                f"{link} is a link to {target}: a link may only lead to a file that is sent itself (inside {folder}, "
                "not hidden, not a credential); nothing was sent."
            )
        files[path] = target.read_bytes()
    check_files(folder, files, token)
    return files


def check_files(folder: Path, files: dict[str, bytes], token: str | None = None) -> None:
    """Refuse a file with a secret (`token`, this machine's tokens, SECRET_SHAPES) or a safetensors file cut short."""
    tokens = known_tokens(token)
    for path, data in files.items():
        where = redact(str(folder / path), tokens)
        if secret := find_secret(path.encode(), tokens):
            raise UsageError(f"{where} has {secret} in its name: rename it before pushing (nothing was sent).")
        if secret := find_secret(data, tokens) or _png_secret(data, tokens, where):
            raise UsageError(f"{where} holds {secret}: remove it before pushing (nothing was sent).")
        if path.endswith(".safetensors"):
            try:
                deserialize(data)  # checks that the tensors' byte ranges cover the file exactly
            except SafetensorError as error:
                raise UsageError(f"{where} is not a complete safetensors file: {error}; it would not load.") from None


def known_tokens(token: str | None = None) -> set[str]:
    """`token` and every token of this machine: the one in use, HF_TOKEN, the login's token file, stored tokens."""
    token_file = Path(hub_constants.HF_TOKEN_PATH)
    saved = token_file.read_text(errors="replace") if token_file.is_file() else None
    candidates = [token, get_token(), os.environ.get("HF_TOKEN"), saved, *get_stored_tokens().values()]
    return {candidate.strip() for candidate in candidates if candidate and candidate.strip()}


def find_secret(data: bytes, tokens: Iterable[str]) -> str | None:
    """What secret `data` holds ("a private key", ...), or None."""
    if any(token.encode() in data for token in tokens):
        return "a Hugging Face access token"
    return next((secret for secret, shape in SECRET_SHAPES.items() if shape.search(data)), None)


def _png_secret(data: bytes, tokens: set[str], where: str) -> str | None:
    """The secret in a PNG's zlib-compressed chunks (zTXt, iTXt, iCCP), whatever the file's name; None if none."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length].partition(b"\0")[2]  # after the keyword
        offset += 12 + length  # length, type, data, CRC
        if kind in (b"zTXt", b"iCCP"):  # compression method, then zlib data
            compressed = body[1:]
        elif kind == b"iTXt" and body[:1] == b"\1":  # compressed: flag, method, language, NUL, keyword, NUL, data
            compressed = body[2:].split(b"\0", 2)[-1]
        else:
            continue
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(compressed, PNG_CHUNK_LIMIT)
        except zlib.error:
            text = b""
        if not inflater.eof:
            raise UsageError(
                f"{where} has a compressed PNG chunk ({kind.decode()}) that cannot be read within "
                f"{PNG_CHUNK_LIMIT // 2**20} MiB, so it cannot be scanned: remove it (nothing was sent)."
            )
        if secret := find_secret(text, tokens):
            return secret
    return None


def redact(text: str, tokens: Iterable[str] = ()) -> str:
    """`text` without the `tokens` and without anything shaped like a Hub token."""
    for token in tokens:
        text = text.replace(token, "<redacted>")
    return re.sub(TOKEN_SHAPE, "<redacted>", text)
