"""File helpers: atomic writes, checksums and downloads, with errors that say what to do."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from musicdecomp.errors import UserError


def load_torch(path: str | os.PathLike, what: str, missing: str, unreadable: str):
    """``torch.load`` onto the CPU (tensors and plain containers only). A missing file raises
    "<path> does not exist; <missing>", an unreadable or foreign one "<path> is not <what> (<error type>: <the first
    line of its message>); <unreadable>"."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; {missing}") from None
    except Exception as e:  # truncated, not a torch file, or made by something else
        raise UserError(f"{path} is not {what} ({first_line(e)}); {unreadable}") from None


def first_line(error: BaseException, most: int = 200) -> str:
    """``<type>: <the first line of its message>``, for a one-line error: a line longer than ``most`` characters is cut
    after its first sentence (or at ``most``); of torch's "Weights only load failed" the unpickler's own line."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch.load's advice first, the reason after it
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > most:
        end = text.find(". ")
        text = text[:end + 1] if 0 < end < most else text[:most - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read_json(path: str | os.PathLike, missing: str, unreadable: str | None = None):
    """Parse a JSON file. A missing file raises "<path> does not exist; <missing>", an unreadable or
    malformed one "<path> is not valid JSON (<error>); <unreadable>" (``unreadable`` defaults to ``missing``)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; {missing}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}); {unreadable or missing}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); {unreadable or missing}") from None


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, fix: str) -> str:
    """Return the file's sha256; raise UserError if ``expected`` is given and does not match.

    ``expected`` may be a prefix (at least 8 hex digits), as EnCodec's checkpoint names use.
    """
    digest = sha256_of(path)
    if expected and not digest.startswith(expected.lower()):
        raise UserError(f"checksum mismatch for {path}: sha256 {digest[:16]}..., expected {expected[:16]}...; {fix}")
    return digest


def ensure_parent(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder for {path}: {e.strerror or e}; "
                        f"choose a writable output location or fix its permissions") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A crash or an error leaves no partial file under the final name.
    """
    path = ensure_parent(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; "
                        f"choose a writable output location or fix its permissions") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """``atomic_path`` for a folder: fill the yielded empty folder; it replaces ``path`` only on success."""
    path = ensure_parent(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def download(url: str, dst: str | os.PathLike, fix: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dst`` (atomically). ``fix`` says what to do when there is no network."""
    with atomic_path(dst) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise UserError(f"cannot download {url} ({reason}); {fix}") from None
