"""A lean HTTP load generator for the serving-runtime section: each request's bytes (multipart
upload included) are built once, then sent with asyncio streams and the answer read back. Next to
httpx this costs the client little CPU, which matters when client and server share 2 cores and the
client must offer twice what the server can take.

Closed-loop clients keep their connection open between requests (HTTP keep-alive, as an SDK's or a
proxy's connection pool does); open-loop arrivals each open a fresh one (new clients arriving)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass


def multipart_post(host: str, port: int, path: str, image: bytes, keep_alive: bool = False) -> bytes:
    """A complete ``POST path`` with ``image`` as the multipart field ``image``; ``Connection: close``
    unless ``keep_alive``."""
    boundary = b"sightline-bench-boundary"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--" + boundary + b"--\r\n")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


@dataclass(frozen=True)
class Result:
    start: float
    seconds: float
    status: int   # 0: the connection failed


async def send(host: str, port: int, request: bytes) -> Result:
    """One request on its own connection; the status line and the whole answer are read."""
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            await reader.read()                      # the rest, to the server's close
        finally:
            writer.close()
    except (OSError, IndexError, ValueError):
        return Result(t0, time.perf_counter() - t0, 0)
    return Result(t0, time.perf_counter() - t0, status)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response (status line, headers, ``Content-Length`` body): its status, and whether
    the connection may carry the next request."""
    status = int((await reader.readline()).split()[1])
    length, reusable = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value == b"close":
            reusable = False
    await reader.readexactly(length)
    return status, reusable


class KeptConnection:
    """One client's connection, reopened when the server closes it or it fails."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: bytes) -> Result:
        """``request`` (built with ``keep_alive=True``) and its whole answer."""
        t0 = time.perf_counter()
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.streams
            writer.write(request)
            await writer.drain()
            status, reusable = await _answer(reader)
        except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
            self.close()
            return Result(t0, time.perf_counter() - t0, 0)
        if not reusable:
            self.close()
        return Result(t0, time.perf_counter() - t0, status)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def closed_loop(host: str, port: int, requests: list[bytes], clients: int, seconds: float) -> list[Result]:
    """``clients`` senders, each on its own kept-alive connection, sending its next request when the
    last one is answered; ``requests`` are built with ``keep_alive=True``."""
    out: list[Result] = []
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        i, connection = k, KeptConnection(host, port)
        try:
            while time.perf_counter() < deadline:
                out.append(await connection.send(requests[i % len(requests)]))
                i += clients
        finally:
            connection.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return out


async def open_loop(host: str, port: int, requests: list[bytes], rate: float, seconds: float,
                    seed: int | None = None) -> list[Result]:
    """Requests started at ``rate`` per second, whatever the answers: evenly spaced, or with ``seed``
    at random (a Poisson process, as independent clients arrive: two evenly spaced streams side by
    side would meet at the same few phases over and over)."""
    count = int(rate * seconds)
    if seed is None:
        offsets = [i / rate for i in range(count)]
    else:
        gaps = random.Random(seed)
        offsets = list(itertools.accumulate((gaps.expovariate(rate) for _ in range(count)), initial=0.0))[:count]
    start, tasks = time.perf_counter(), []
    for i, offset in enumerate(offsets):
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(host, port, requests[i % len(requests)])))
    return list(await asyncio.gather(*tasks))
