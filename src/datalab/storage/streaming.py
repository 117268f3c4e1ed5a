"""Streaming a stored file to the client and learning whether every byte went out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

CHUNK_SIZE = 1024 * 1024


class ByteRange:
    """An inclusive byte range of an object."""

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end

    @property
    def length(self) -> int:
        """Number of bytes in the range."""
        return self.end - self.start + 1


class UnsatisfiableRange(ValueError):
    """A Range header that asks only for bytes past the end of the object."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range asked for, None for the whole object (absent, malformed or multi-range)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first or last) or not (first + last).isdigit():
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise UnsatisfiableRange(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and start > end:
        return None
    if start >= size:
        raise UnsatisfiableRange(header)
    return ByteRange(start, min(end, size - 1))


class FileStreamResponse(Response):
    """An ASGI response sending part of a file in chunks, calling on_finish(bytes_sent, complete) at the end.

    complete is True only when every byte was handed to the server while the client was still connected,
    which is what a delivery record needs: an aborted transfer must not count. A client that closes the
    connection once it has every byte (curl, urllib and other `Connection: close` clients do so at once)
    has received the whole response.
    """

    def __init__(
        self,
        *,
        path: Path,
        byte_range: ByteRange,
        status_code: int,
        headers: Mapping[str, str],
        on_finish: Callable[[int, bool], None],
    ) -> None:
        self.path = path
        self.byte_range = byte_range
        self.status_code = status_code
        self.background = None
        self.response_headers = {**headers, "content-length": str(byte_range.length)}
        self.on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        sent = 0
        complete = False
        ended = False
        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1")) for k, v in self.response_headers.items()
                    ],
                }
            )
            remaining = self.byte_range.length
            handle: BinaryIO = await anyio.to_thread.run_sync(self.path.open, "rb")
            try:
                await anyio.to_thread.run_sync(handle.seek, self.byte_range.start)
                while remaining > 0 and not disconnected.is_set():
                    chunk = await anyio.to_thread.run_sync(handle.read, min(CHUNK_SIZE, remaining))
                    if not chunk:
                        break
                    last = len(chunk) >= remaining
                    if last:
                        # Let a pending disconnect notice arrive before the final bytes go out: the server
                        # drops what is sent to a closed connection without saying so.
                        await asyncio.sleep(0)
                        if disconnected.is_set():
                            break
                    # The final chunk ends the response, so a client closing once it has every byte is
                    # not mistaken for one that went away mid-transfer.
                    await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                    ended = last
                    sent += len(chunk)
                    remaining -= len(chunk)
            finally:
                await anyio.to_thread.run_sync(handle.close)
            if ended:
                complete = True
            else:
                # Stopped short, or nothing to send (an empty object): end the response here.
                await asyncio.sleep(0)
                complete = remaining == 0 and not disconnected.is_set()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.on_finish, sent, complete)
