"""A TCP proxy in front of the real PostgreSQL that can play a server restart.

While ``starting()`` holds, every open connection is cut and every new one is answered, in the
PostgreSQL wire protocol, as a server that is still starting: an ErrorResponse with SQLSTATE
57P03 ("the database system is starting up"), then the connection closes. ``up()`` forwards
again. What the app's drivers see is exactly what they see during a real restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


def _error(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        code + value.encode() + b"\0"
        for code, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    payload = fields + b"\0"
    return b"E" + struct.pack("!I", len(payload) + 4) + payload


class RestartingPostgres:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.refused = 0
        """Connections answered 57P03 so far."""
        self._up = True
        self._server: asyncio.Server | None = None
        self.listen_port = 0
        """The port it listens on (127.0.0.1) once started."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        return self.listen_port

    def starting(self) -> None:
        """Cut every connection; new ones are told the server is starting up."""
        self._up = False
        for writer in list(self._writers):
            writer.close()

    def up(self) -> None:
        self._up = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self._up:
                await self._forward(reader, writer)
            else:
                await self._refuse(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            self.refused += 1
            writer.write(_error("57P03", "the database system is starting up"))
            await writer.drain()
            return

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        self._writers.add(server_w)
        try:
            await asyncio.gather(
                self._pump(reader, server_w), self._pump(server_r, writer), return_exceptions=True
            )
        finally:
            self._writers.discard(server_w)
            server_w.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(OSError):
                sink.close()
