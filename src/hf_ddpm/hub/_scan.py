# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What may be sent: the files a push picks (hidden and credential files never), the scan of every file's bytes
for tokens, and the check that a safetensors file is complete."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import get_stored_tokens, get_token

# Pickled files: never in a pipeline push; named in a warning when a checkpoint download fetches them.
PICKLE_PATTERNS = ["*.bin", "*.pkl", "*.pickle", "*.pt", "*.pth", "*.ckpt"]
# Never sent by any push (nor hidden files and folders), unless a Space push names them in `include`.
CREDENTIAL_FILES = [
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    "*.netrc", "_netrc", "credentials", "credentials.json", "*.git-credentials", "token", "stored_tokens", "*.env",
]  # fmt: skip
# An access token as the Hub issues them, as bytes (files are scanned whatever their type); the active token is also
# looked for verbatim. Files are read in blocks that overlap by more than a token's length.
TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
TOKEN_BYTES_RE = re.compile(rb"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9])")
SCAN_BLOCK_BYTES = 8 * 2**20
SCAN_OVERLAP_BYTES = 4096


def _walk(folder: Path) -> list[str]:
    """Every file below `folder`, as sorted POSIX paths relative to it."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether `path` matches a pattern; a pattern spans exactly as many folders as it names ("*.py" is root-only)."""
    # not huggingface_hub's filter_repo_objects: there "*" spans folders, so "*.py" would pick scheduler/x.py too
    depth = path.count("/")
    return any(pattern.count("/") == depth and fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _is_private(path: str) -> bool:
    """Hidden (a name or folder starting with "."), or named like a credential (keys, .netrc, tokens)."""
    parts = path.split("/")
    return any(part.startswith(".") for part in parts) or _matches(parts[-1], CREDENTIAL_FILES)


def _is_hidden_or_cache(path: str) -> bool:
    *folders, name = path.split("/")
    hidden_folder = any(folder.startswith(".") or folder == "__pycache__" for folder in folders)
    return hidden_folder or name.startswith(".") or name.endswith(".pyc")


def _check_uploadable(folder: Path, paths: list[str]) -> None:
    """Everything checked before a push sends a byte: no token in any file, every safetensors file complete."""
    _check_no_secrets(folder, paths)
    for path in paths:
        if path.endswith(".safetensors"):
            _check_safetensors(folder / path)


def _check_no_secrets(folder: Path, paths: list[str]) -> None:
    """
    Refuse to upload any file, whatever its name or type, whose bytes hold a token of this machine (the one in use,
    HF_TOKEN, the login's token file and every stored token) or anything shaped like a Hub token; PNG text chunks are
    also read decompressed (zTXt, iTXt).
    """
    tokens = {token.strip().encode() for token in _known_tokens() if token and token.strip()}
    for path in paths:
        full = folder / path
        if _holds_token(full, tokens):
            raise ValueError(f"{full} holds a Hugging Face access token: remove it before pushing (nothing was sent).")


def _known_tokens() -> list[str]:
    token_file = Path(hub_constants.HF_TOKEN_PATH)
    saved = token_file.read_text(errors="replace") if token_file.is_file() else None
    return [get_token(), os.environ.get("HF_TOKEN"), saved, *get_stored_tokens().values()]


def _holds_token(path: Path, tokens: set[bytes]) -> bool:
    with open(path, "rb") as f:
        tail = b""
        while block := f.read(SCAN_BLOCK_BYTES):
            data = tail + block
            if TOKEN_BYTES_RE.search(data) or any(token in data for token in tokens):
                return True
            tail = data[-SCAN_OVERLAP_BYTES:]
    return path.suffix.lower() == ".png" and _png_text_holds_token(path, tokens)


def _png_text_holds_token(path: Path, tokens: set[bytes]) -> bool:
    """Compressed PNG text chunks hide their bytes from the raw scan: read them as PIL decodes them."""
    import PIL.Image

    try:
        with PIL.Image.open(path, formats=["PNG"]) as image:
            texts = [f"{key}\n{value}" for key, value in getattr(image, "text", {}).items()]
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return False  # not a PNG PIL can read: the raw scan is all there is
    data = "\n".join(texts).encode("utf-8", errors="replace")
    return bool(TOKEN_BYTES_RE.search(data)) or any(token in data for token in tokens)


def _check_safetensors(path: Path) -> None:
    """
    Refuse a safetensors file that would not load. safetensors checks on opening that the header parses, that each
    tensor's byte range fits its dtype and shape, and that the ranges cover the file exactly (a truncated file fails).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy"):
            pass
    except SafetensorError as error:
        raise ValueError(f"{path} is not a complete safetensors file: {error}; it would not load.") from None


def _redact(text: str) -> str:
    return TOKEN_RE.sub("<redacted>", text)
