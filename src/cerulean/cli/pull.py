"""``cerulean models pull``: download a GGUF over HTTP(S) into the data directory, resumably.

urllib, not httpx: the CLI needs one GET with a ``Range`` header, and httpx is not among
Cerulean's runtime dependencies. The file goes to ``<home>/models/pulled/<name>`` through a
``.partial`` file that a later pull resumes (``Range: bytes=N-``; a server that ignores it sends
the whole file again, which is then written from the start). Before writing, the free space is
checked against what remains to download; with ``--sha256`` the finished file is verified and a
mismatch deletes it. Nothing pulls by itself: this runs only when a user asks.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["PullError", "pull", "resolve_url", "target_name"]

_CHUNK = 1 << 20
_HF = "https://huggingface.co/{repo}/resolve/{revision}/{path}"
_RANGE_TOTAL = re.compile(r"/(\d+)$")
# Disk space to keep free beyond the file itself (the filesystem needs some to work).
_MARGIN = 64 << 20


class PullError(Exception):
    """A pull that cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Pulled:
    path: Path
    size: int
    sha256: str
    resumed_from: int


def resolve_url(source: str) -> str:
    """``hf://org/repo/file.gguf`` (or ``hf://org/repo@revision/file.gguf``) → Hugging Face's
    download URL; http(s) URLs as they are."""
    if source.startswith("hf://"):
        parts = source[len("hf://") :].split("/")
        if len(parts) < 3 or not all(parts):
            raise PullError(f"'{source}' is not hf://ORG/REPO/FILE.gguf")
        repo, revision = f"{parts[0]}/{parts[1]}", "main"
        if "@" in parts[1]:
            name, revision = parts[1].split("@", 1)
            repo = f"{parts[0]}/{name}"
        return _HF.format(repo=repo, revision=revision, path="/".join(parts[2:]))
    if urlparse(source).scheme not in ("http", "https"):
        raise PullError(f"'{source}' is not an http(s):// or hf:// URL")
    return source


def target_name(url: str) -> str:
    """The file name a URL downloads to."""
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise PullError(f"{url} names no file")
    return name


def _free(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def pull(
    url: str,
    directory: Path,
    *,
    sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> Pulled:
    """Download ``url`` into ``directory``; ``progress(done, total)`` after each chunk."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / target_name(url)
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "cerulean-pull"})  # noqa: S310
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        answer = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already whole
            return _finish(partial, target, have, sha256, have)
        raise PullError(f"{url} answered HTTP {exc.code} ({exc.reason}); check the URL") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PullError(f"cannot reach {url} ({getattr(exc, 'reason', exc)})") from None
    with answer:
        resumed = have if answer.status == 206 else 0
        total = _total(answer.headers, resumed)
        if total is not None:
            needed = total - resumed
            free = _free(directory)
            if needed + _MARGIN > free:
                raise PullError(
                    f"not enough disk space in {directory}: the file needs {needed:,} more bytes, "
                    f"{free:,} are free; free some space or pull into another --home"
                )
        mode = "ab" if resumed else "wb"
        done = resumed
        try:
            with partial.open(mode) as sink:
                while chunk := answer.read(_CHUNK):
                    sink.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise PullError(
                    f"the disk filled up after {done:,} bytes; free some space and pull again "
                    "(it resumes)"
                ) from None
            raise PullError(
                f"the download broke off after {done:,} bytes ({exc}); pull again (it resumes)"
            ) from None
    if total is not None and done < total:
        raise PullError(
            f"the download broke off after {done:,} of {total:,} bytes; pull again (it resumes)"
        )
    return _finish(partial, target, done, sha256, resumed)


def _total(headers: object, resumed: int) -> int | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    content_range = get("Content-Range")
    if content_range:
        match = _RANGE_TOTAL.search(content_range)
        if match:
            return int(match.group(1))
    length = get("Content-Length")
    return resumed + int(length) if length and length.isdigit() else None


def _finish(partial: Path, target: Path, size: int, sha256: str | None, resumed: int) -> Pulled:
    digest = hashlib.sha256()
    with partial.open("rb") as source:
        while block := source.read(_CHUNK):
            digest.update(block)
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256.lower():
        partial.unlink()
        raise PullError(
            f"checksum mismatch: the download has sha256 {actual}, not {sha256.lower()}; the file "
            "was deleted (check the checksum, or the URL)"
        )
    partial.replace(target)
    return Pulled(target, size, actual, resumed)
