"""A lean HTTP load generator for the serving-runtime section: each request's bytes (multipart
upload included) are built once, then sent on a fresh loopback connection with asyncio streams and
the status read back. Next to httpx this costs the client little CPU, which matters when client and
server share 2 cores and the client must offer twice what the server can take."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


def multipart_post(host: str, port: int, path: str, image: bytes) -> bytes:
    """A complete ``POST path`` with ``image`` as the multipart field ``image``; ``Connection: close``."""
    boundary = b"sightline-bench-boundary"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--" + boundary + b"--\r\n")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
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


async def closed_loop(host: str, port: int, requests: list[bytes], clients: int, seconds: float) -> list[Result]:
    """``clients`` senders, each sending its next request when the last one is answered."""
    out: list[Result] = []
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            out.append(await send(host, port, requests[i % len(requests)]))
            i += clients

    await asyncio.gather(*(client(k) for k in range(clients)))
    return out


async def open_loop(host: str, port: int, requests: list[bytes], rate: float, seconds: float) -> list[Result]:
    """Requests started at ``rate`` per second, whatever the answers."""
    start, tasks = time.perf_counter(), []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(host, port, requests[i % len(requests)])))
    return list(await asyncio.gather(*tasks))
