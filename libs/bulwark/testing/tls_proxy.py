"""A TLS front for a plaintext TCP server, so clients' TLS settings can be tested against a part that
cannot serve TLS itself.

Tansu 0.6 is such a part: its `--cert` and `--key` options cannot be given together, and its listener never
wraps connections in TLS (see `tests/integration/test_kafka_tls.py`). The test broker listens in plaintext
on one port and advertises the front's port, so every connection a Kafka client makes, bootstrap and
coordinator alike, goes through the front's TLS.

The front runs its own asyncio loop in a daemon thread. It records every handshake it refused with
OpenSSL's reason, so a test can tell *why* a client was turned away, not only that it was.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

_HANDSHAKE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Refusal:
    """A connection whose TLS handshake failed, and OpenSSL's reason (or the exception's class)."""

    peer: str
    reason: str


class TLSTerminator:
    """Accepts TLS on 127.0.0.1 and forwards the decrypted bytes to a plaintext server on 127.0.0.1.

    With `client_ca`, a client must present a certificate signed by that CA (mutual TLS). The port is bound
    in the constructor, so it is known before the server behind the front starts (it advertises it).
    """

    def __init__(self, upstream_port: int, *, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        self._ctx = ctx
        self._upstream_port = upstream_port
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        # Every failed handshake, in order, and the count of handshakes that succeeded.
        self.refusals: list[Refusal] = []
        self.sessions = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-terminator", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> TLSTerminator:
        """Start accepting connections."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, sock=self._sock), self._loop).result(timeout=5)
        return self

    def stop(self) -> None:
        """Stop accepting, drop open connections, and end the loop's thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()
        self._sock.close()

    def __enter__(self) -> TLSTerminator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Tracked so `stop()` can cancel connections still open.
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await self._serve(reader, writer)
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        try:
            await writer.start_tls(self._ctx, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT_S)
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.refusals.append(Refusal(f"{host}:{port}", str(reason)))
            return
        self.sessions += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until either side ends; then close `dst`, which ends the other direction too (Kafka clients
    never half-close)."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        dst.close()
