"""How toxics act on one proxied connection: ``Link``, a reader and a writer task per direction.

Per direction, a reader task timestamps chunks as they arrive and a writer task applies the
toxics in a fixed order before forwarding: timeout (hold) -> latency -> limit_data /
reset_after_bytes (truncate) -> bandwidth (pace) -> write -> close or reset if a limit was hit.
``reset_peer`` and ``timeout(ms > 0)`` run on per-connection timers. End of stream is forwarded
as a half-close (after any ``slow_close`` delay); a reset from either peer is passed on to the
other as a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Literal

from meshlib.testing.faultproxy.toxics import (
    Bandwidth,
    Direction,
    Latency,
    LimitData,
    ResetAfterBytes,
    ResetPeer,
    SlowClose,
    Timeout,
    Toxic,
)

__all__ = ["Link"]

_CloseMode = Literal["fin", "rst", "abort"]
_CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: SO_LINGER on with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone: aborting is all that is left
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Link:
    """One proxied connection: per direction a reader task and a writer task applying toxics.

    ``FaultProxy`` creates one per accepted connection; it is public only so the proxy module can
    use it. The callbacks keep it ignorant of the proxy: ``toxics()`` returns the current table
    (replaced, never mutated, on change), ``on_bytes`` counts delivered bytes, ``on_closed`` runs
    once when the link is closed.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: tuple[str, int],
        connect_timeout: float,
        rng: random.Random,
        toxics: Callable[[], Mapping[str, Toxic]],
        on_bytes: Callable[[Direction, int], None],
        on_closed: Callable[[Link], None],
    ) -> None:
        self.client = (reader, writer)
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self.rng = rng
        self.toxics = toxics
        self.on_bytes = on_bytes
        self.on_closed = on_closed
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.applies: dict[str, bool] = {}
        self.passed: dict[str, int] = {}
        self.changed = asyncio.Event()
        self.eofs = 0
        self.closed = False

    async def run(self) -> None:
        self.toxics_changed()
        try:
            ur, uw = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), self.connect_timeout
            )
        except (OSError, TimeoutError):
            self.close("fin")
            return
        if self.closed:  # reset by a toxic (or the proxy stopped) while connecting
            uw.transport.abort()
            return
        self.upstream_writer = uw
        creader, cwriter = self.client
        pipes: tuple[tuple[Direction, asyncio.StreamReader, asyncio.StreamWriter], ...] = (
            ("upstream", creader, uw),
            ("downstream", ur, cwriter),
        )
        for direction, src, dst in pipes:
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=16)
            self.tasks.append(asyncio.create_task(self._read(src, queue)))
            self.tasks.append(asyncio.create_task(self._write(direction, queue, dst)))

    def _applies(self, name: str, toxic: Toxic) -> bool:
        hit = self.applies.get(name)
        if hit is None:
            hit = toxic.toxicity >= 1.0 or self.rng.random() < toxic.toxicity
            self.applies[name] = hit
        return hit

    def active(self, direction: Direction) -> list[tuple[str, Toxic]]:
        items = self.toxics().items()
        return [(n, t) for n, t in items if t.direction == direction and self._applies(n, t)]

    def toxics_changed(self) -> None:
        """Start timers for new timer toxics, drop state of removed ones, wake held writers."""
        current = self.toxics()
        for name in [n for n in self.timers if n not in current]:
            self.timers.pop(name).cancel()
        self.applies = {n: hit for n, hit in self.applies.items() if n in current}
        self.passed = {n: count for n, count in self.passed.items() if n in current}
        loop = asyncio.get_running_loop()
        for name, toxic in current.items():
            if name in self.timers or not self._applies(name, toxic):
                continue
            if isinstance(toxic, ResetPeer):
                self.timers[name] = loop.call_later(toxic.after_ms / 1000, self.close, "rst")
            elif isinstance(toxic, Timeout) and toxic.ms > 0:
                self.timers[name] = loop.call_later(toxic.ms / 1000, self.close, "fin")
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    async def _read(
        self, src: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await src.read(_CHUNK)
                await queue.put((loop.time(), data))
                if not data:
                    return
        except OSError:  # a reset from this peer is passed on as a reset
            self.close("rst")

    async def _write(
        self,
        direction: Direction,
        queue: asyncio.Queue[tuple[float, bytes]],
        dst: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                arrived, data = await queue.get()
                toxics = self.active(direction)
                while any(isinstance(t, Timeout) for _, t in toxics):
                    await self.changed.wait()
                    toxics = self.active(direction)
                if not data:
                    await self._forward_eof(toxics, dst)
                    return
                delay = 0.0
                for _, t in toxics:
                    if isinstance(t, Latency):
                        jitter = self.rng.uniform(-t.jitter_ms, t.jitter_ms) if t.jitter_ms else 0.0
                        delay += max(0.0, t.ms + jitter) / 1000
                if delay > 0 and (wait := arrived + delay - loop.time()) > 0:
                    await asyncio.sleep(wait)
                ending: _CloseMode | None = None
                for name, t in toxics:
                    if isinstance(t, LimitData | ResetAfterBytes):
                        left = max(0, t.limit - self.passed.get(name, 0))
                        if left <= len(data):
                            data = data[:left]
                            ending = (
                                "rst"
                                if isinstance(t, ResetAfterBytes) or ending == "rst"
                                else "fin"
                            )
                for name, t in toxics:
                    if isinstance(t, LimitData | ResetAfterBytes):
                        self.passed[name] = self.passed.get(name, 0) + len(data)
                rates = [t.kbps * 1000 for _, t in toxics if isinstance(t, Bandwidth)]
                await self._send(direction, data, dst, min(rates) if rates else None)
                if ending is not None:
                    self.close(ending)
                    return
        except OSError:
            self.close("rst")

    async def _send(
        self, direction: Direction, data: bytes, dst: asyncio.StreamWriter, rate: float | None
    ) -> None:
        step = len(data) if rate is None else max(1, int(rate * 0.02))  # ~20 ms per paced write
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            if rate is not None:
                await asyncio.sleep(len(piece) / rate)
            dst.write(piece)
            self.on_bytes(direction, len(piece))
            await dst.drain()

    async def _forward_eof(
        self, toxics: list[tuple[str, Toxic]], dst: asyncio.StreamWriter
    ) -> None:
        delays = [t.delay_ms for _, t in toxics if isinstance(t, SlowClose)]
        if delays:
            await asyncio.sleep(max(delays) / 1000)
        self.eofs += 1
        if self.eofs == 2 or not dst.can_write_eof():
            self.close("fin")
            return
        try:
            dst.write_eof()
        except OSError:
            self.close("fin")

    def close(self, mode: _CloseMode) -> None:
        """Close both sides once: FIN (flush first), RST, or abort (drop buffers, for shutdown)."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        for handle in self.timers.values():
            handle.cancel()
        for writer in (self.client[1], self.upstream_writer):
            if writer is None:
                continue
            if mode == "rst":
                _reset(writer)
            elif mode == "abort":
                writer.transport.abort()
            else:
                writer.close()
        self.changed.set()
        self.on_closed(self)
