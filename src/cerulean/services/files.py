"""Files: uploads streamed to disk, their metadata in the store, Azure's limits.

An upload is parsed as it arrives (``python-multipart``'s push parser): the file part goes
straight into ``<files dir>/<id>.part``, counted against the purpose's limit, then is flushed,
fsynced and renamed to ``<id>`` before its row is written; nothing holds the whole file in
memory. A file's row is written last and deleted first, so a crash leaves at most an orphan
``.part`` file, never a row without its bytes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from cerulean.errors import FileTooLarge, InvalidRequest, ObjectNotFound, RequestTooLarge
from cerulean.settings import Settings
from cerulean.store.batches import FileRecord, JobStore

__all__ = [
    "UPLOAD_PURPOSES",
    "FileService",
    "file_object",
    "new_file_id",
]

UPLOAD_PURPOSES = ("batch", "fine-tune", "assistants")
_EXPIRY_RANGE = (1_209_600, 2_592_000)  # Azure: 14 to 30 days
_FIELD_LIMIT = 64 * 1024  # a form field other than the file


def new_file_id() -> str:
    """``file-`` and 32 hex digits, as Azure's ids."""
    return "file-" + secrets.token_hex(16)


def file_object(record: FileRecord) -> dict[str, Any]:
    """The wire ``file`` object."""
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": record.status,
        "status_details": record.status_details,
        "expires_at": record.expires_at,
    }


@dataclass
class _Form:
    """What the multipart parser has seen so far."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    # The part being read: its name, whether it is the file, the field's bytes so far.
    name: str | None = None
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, bytes] = field(default_factory=dict)
    error: Exception | None = None


class FileService:
    """Files of one server: the directory under the home, the rows in the store."""

    def __init__(self, settings: Settings, jobs: JobStore) -> None:
        self._settings = settings
        self._jobs = jobs
        self.directory = settings.files_path

    def path(self, file_id: str) -> Path:
        return self.directory / file_id

    # -- upload -------------------------------------------------------------------------------

    async def upload(self, content_type: str, chunks: AsyncIterator[bytes]) -> FileRecord:
        """Read a ``multipart/form-data`` upload (``file``, ``purpose``, ``expires_after``)."""
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequest(
                "The request must be multipart/form-data with a 'file' and a 'purpose'.",
                param="file",
            )
        await asyncio.to_thread(self.directory.mkdir, mode=0o700, parents=True, exist_ok=True)
        file_id = new_file_id()
        part = self.directory / f".{file_id}.part"
        form = _Form()
        limit = max(self._settings.batch_file_max_bytes, self._settings.file_max_bytes)
        try:
            with part.open("wb") as sink:
                await self._read(boundary, chunks, self._callbacks(form, sink, limit), form)
                sink.flush()
                await asyncio.to_thread(os.fsync, sink.fileno())
            record = self._record(file_id, form)
            self._check_count(record)
            await asyncio.to_thread(os.replace, part, self.path(file_id))
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(self._jobs.put_file, record)
        return record

    @staticmethod
    async def _read(
        boundary: bytes, chunks: AsyncIterator[bytes], callbacks: Any, form: _Form
    ) -> None:
        """Push the body through the multipart parser (a malformed form is a 400)."""
        try:
            parser = MultipartParser(boundary, callbacks)
            async for chunk in chunks:
                parser.write(chunk)
                if form.error is not None:
                    raise form.error
            parser.finalize()
        except FormParserError as exc:
            raise InvalidRequest(
                f"The multipart/form-data body could not be parsed: {exc}", param="file"
            ) from None
        if form.error is not None:
            raise form.error

    def _callbacks(self, form: _Form, sink: IO[bytes], limit: int) -> Any:
        def on_part_begin() -> None:
            form.name, form.is_file = None, False
            form.value.clear()
            form.headers.clear()

        def on_header_field(data: bytes, start: int, end: int) -> None:
            form.header_field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            form.header_value += data[start:end]

        def on_header_end() -> None:
            form.headers[bytes(form.header_field).lower().decode("latin-1")] = bytes(
                form.header_value
            )
            form.header_field.clear()
            form.header_value.clear()

        def on_headers_finished() -> None:
            _, options = parse_options_header(form.headers.get("content-disposition", b""))
            name = options.get(b"name", b"").decode("utf-8", "replace")
            form.name = name
            if name == "file":
                form.is_file = True
                raw = options.get(b"filename", b"file.jsonl").decode("utf-8", "replace")
                form.filename = os.path.basename(raw.replace("\\", "/")) or "file"

        def on_part_data(data: bytes, start: int, end: int) -> None:
            if form.error is not None:
                return
            if form.is_file:
                form.size += end - start
                if form.size > limit:
                    form.error = RequestTooLarge(limit)
                    return
                sink.write(data[start:end])
                return
            form.value += data[start:end]
            if len(form.value) > _FIELD_LIMIT:
                form.error = InvalidRequest(f"Form field '{form.name}' is too long.")

        def on_part_end() -> None:
            if form.name and not form.is_file:
                form.fields[form.name] = form.value.decode("utf-8", "replace")

        return {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        }

    def _record(self, file_id: str, form: _Form) -> FileRecord:
        if form.filename is None:
            raise InvalidRequest("'file' is a required property", param="file")
        purpose = form.fields.get("purpose")
        if purpose is None:
            raise InvalidRequest("'purpose' is a required property", param="purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"Invalid value for purpose: '{purpose}'. Supported values are: "
                + ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
                + ".",
                param="purpose",
                code="invalidPayload",
            )
        limit = (
            self._settings.batch_file_max_bytes
            if purpose == "batch"
            else self._settings.file_max_bytes
        )
        if form.size > limit:
            raise FileTooLarge(purpose, limit, form.size)
        now = int(time.time())
        return FileRecord(
            id=file_id,
            filename=form.filename,
            purpose=purpose,
            bytes=form.size,
            created_at=now,
            expires_at=_expiry(form.fields, now),
            status="processed",
        )

    def _check_count(self, record: FileRecord) -> None:
        with_expiry = record.expires_at is not None
        limit = self._settings.max_files_with_expiry if with_expiry else self._settings.max_files
        held = self._jobs.count_files(with_expiry=with_expiry)
        if held >= limit:
            kind = "with an expiry" if with_expiry else "without an expiry"
            raise InvalidRequest(
                f"The resource holds {held} files {kind}, its limit. Delete files (or upload "
                "with expires_after, which allows more) and try again.",
                param="file",
                code="file_limit_exceeded",
            )

    # -- the rest -----------------------------------------------------------------------------

    async def get(self, file_id: str) -> FileRecord:
        record = await asyncio.to_thread(self._jobs.get_file, file_id)
        if record is None or self._expired(record):
            raise ObjectNotFound("File", file_id)
        return record

    async def listing(
        self, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        records = await asyncio.to_thread(
            self._jobs.list_files,
            purpose=purpose,
            after=after,
            limit=limit + 1,
            descending=order == "desc",
        )
        shown = [r for r in records[:limit] if not self._expired(r)]
        data = [file_object(r) for r in shown]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(records) > limit,
        }

    async def delete(self, file_id: str) -> dict[str, Any]:
        record = await self.get(file_id)
        await asyncio.to_thread(self.remove, record.id)
        return {"id": record.id, "object": "file", "deleted": True}

    def remove(self, file_id: str) -> None:
        """Delete a file's row, then its bytes (blocking)."""
        self._jobs.delete_file(file_id)
        self.path(file_id).unlink(missing_ok=True)

    async def content(self, file_id: str) -> tuple[FileRecord, Path]:
        record = await self.get(file_id)
        path = self.path(record.id)
        if not await asyncio.to_thread(path.exists):
            raise ObjectNotFound("File", file_id)
        return record, path

    def write_produced(
        self, filename: str, purpose: str, lines: Iterator[str], *, expires_after: int | None
    ) -> FileRecord:
        """Write a file the server produces (a batch's output), line by line (blocking)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        file_id = new_file_id()
        part = self.directory / f".{file_id}.part"
        size = 0
        with part.open("wb") as sink:
            for line in lines:
                data = line.encode("utf-8") + b"\n"
                size += len(data)
                sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(part, self.path(file_id))
        now = int(time.time())
        record = FileRecord(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            created_at=now,
            expires_at=None if expires_after is None else now + expires_after,
            status="processed",
        )
        self._jobs.put_file(record)
        return record

    def purge_expired(self) -> int:
        """Delete files past their expiry (blocking); how many."""
        gone = self._jobs.expired_files(int(time.time()))
        for file_id in gone:
            self.remove(file_id)
        return len(gone)

    @staticmethod
    def _expired(record: FileRecord) -> bool:
        return record.expires_at is not None and record.expires_at < time.time()


def _expiry(fields: dict[str, str], now: int) -> int | None:
    """``expires_after[anchor]`` (``created_at``) and ``expires_after[seconds]``, if given."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            f"Invalid value for expires_after.anchor: {anchor!r}. Supported value: 'created_at'.",
            param="expires_after.anchor",
        )
    low, high = _EXPIRY_RANGE
    if seconds is None or not seconds.isdigit() or not low <= int(seconds) <= high:
        raise InvalidRequest(
            f"Invalid value for expires_after.seconds: {seconds!r}. It must be between {low} "
            f"and {high} (14 to 30 days).",
            param="expires_after.seconds",
        )
    return now + int(seconds)
