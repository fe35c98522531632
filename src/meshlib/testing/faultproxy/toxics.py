"""The toxics a ``FaultProxy`` can apply and how they act on one proxied connection.

Each toxic describes one way the network misbehaves on one direction of a proxied connection:
``"downstream"`` is upstream-to-client (the response), ``"upstream"`` is client-to-upstream (the
request). ``toxicity`` is the probability that a given connection is affected, drawn once per
connection from the proxy's injected ``random.Random``. Validation happens on construction so a
wrong number in a test fails where it is written, not as a silently healthy proxy.

The lower-case factories (``latency(100)``, ``reset_peer()``...) mirror toxiproxy's toxic names
and parameters; units are milliseconds, bytes and kilobytes (1000 bytes) per second.

``Link`` is the engine behind them. Per direction, a reader task timestamps chunks as they arrive
and a writer task applies the toxics in a fixed order before forwarding: timeout (hold) ->
latency -> limit_data / reset_after_bytes (truncate) -> bandwidth (pace) -> write -> close or
reset if a limit was hit. ``reset_peer`` and ``timeout(ms > 0)`` run on per-connection timers.
End of stream is forwarded as a half-close (after any ``slow_close`` delay); a reset from either
peer is passed on to the other as a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = [
    "Bandwidth",
    "Direction",
    "Latency",
    "LimitData",
    "Link",
    "ResetAfterBytes",
    "ResetPeer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "bandwidth",
    "latency",
    "limit_data",
    "reset_after_bytes",
    "reset_peer",
    "slow_close",
    "timeout",
]

Direction = Literal["upstream", "downstream"]
_CloseMode = Literal["fin", "rst", "abort"]
_CHUNK = 65536


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class _ToxicBase:
    """Fields every toxic has: which direction it acts on and how many connections it hits."""

    kind: ClassVar[str] = "toxic"
    direction: Direction = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if self.direction not in ("upstream", "downstream"):
            raise ValueError(
                f"direction must be 'upstream' or 'downstream', got {self.direction!r}"
            )
        _non_negative("toxicity", self.toxicity)
        if self.toxicity > 1:
            raise ValueError(f"toxicity must be within [0, 1], got {self.toxicity}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency(_ToxicBase):
    """Delay every chunk by ``ms`` plus a uniform draw in ``[-jitter_ms, +jitter_ms]``.

    Delays run from each chunk's arrival, so a multi-chunk response is shifted, not stretched.
    """

    kind: ClassVar[str] = "latency"
    ms: float
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("ms", self.ms)
        _non_negative("jitter_ms", self.jitter_ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class Bandwidth(_ToxicBase):
    """Pace data to at most ``kbps`` kilobytes (1000 bytes) per second, like toxiproxy's rate."""

    kind: ClassVar[str] = "bandwidth"
    kbps: float

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("kbps", self.kbps)
        if self.kbps == 0:
            raise ValueError("kbps must be > 0 (use timeout(0) to stop data entirely)")


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeout(_ToxicBase):
    """Hold all data in this direction; close the connection after ``ms`` (0: never close).

    Held data is released if the toxic is removed before the connection closes.
    """

    kind: ClassVar[str] = "timeout"
    ms: float

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("ms", self.ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResetPeer(_ToxicBase):
    """Reset the connection (RST via ``SO_LINGER`` 0, to both peers) ``after_ms`` after it applies.

    "Applies" means the later of the connection being accepted and the toxic being added.
    """

    kind: ClassVar[str] = "reset_peer"
    after_ms: float = 0.0

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("after_ms", self.after_ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitData(_ToxicBase):
    """Pass ``limit`` bytes in this direction, then close the connection cleanly (FIN)."""

    kind: ClassVar[str] = "limit_data"
    limit: int

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _count("limit", self.limit)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResetAfterBytes(_ToxicBase):
    """Pass ``limit`` bytes in this direction, then reset (RST): a connection reset mid-response."""

    kind: ClassVar[str] = "reset_after_bytes"
    limit: int

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _count("limit", self.limit)


@dataclass(frozen=True, kw_only=True, slots=True)
class SlowClose(_ToxicBase):
    """Delay forwarding the end of stream (FIN) in this direction by ``delay_ms``."""

    kind: ClassVar[str] = "slow_close"
    delay_ms: float

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("delay_ms", self.delay_ms)


Toxic = Latency | Bandwidth | Timeout | ResetPeer | LimitData | ResetAfterBytes | SlowClose
"""Any toxic ``FaultProxy.add`` accepts."""


def latency(
    ms: float, jitter_ms: float = 0.0, direction: Direction = "downstream", toxicity: float = 1.0
) -> Latency:
    return Latency(ms=ms, jitter_ms=jitter_ms, direction=direction, toxicity=toxicity)


def bandwidth(kbps: float, direction: Direction = "downstream", toxicity: float = 1.0) -> Bandwidth:
    return Bandwidth(kbps=kbps, direction=direction, toxicity=toxicity)


def timeout(ms: float, direction: Direction = "downstream", toxicity: float = 1.0) -> Timeout:
    return Timeout(ms=ms, direction=direction, toxicity=toxicity)


def reset_peer(
    after_ms: float = 0.0, direction: Direction = "downstream", toxicity: float = 1.0
) -> ResetPeer:
    return ResetPeer(after_ms=after_ms, direction=direction, toxicity=toxicity)


def limit_data(limit: int, direction: Direction = "downstream", toxicity: float = 1.0) -> LimitData:
    return LimitData(limit=limit, direction=direction, toxicity=toxicity)


def reset_after_bytes(
    limit: int, direction: Direction = "downstream", toxicity: float = 1.0
) -> ResetAfterBytes:
    return ResetAfterBytes(limit=limit, direction=direction, toxicity=toxicity)


def slow_close(
    delay_ms: float, direction: Direction = "downstream", toxicity: float = 1.0
) -> SlowClose:
    return SlowClose(delay_ms=delay_ms, direction=direction, toxicity=toxicity)


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
