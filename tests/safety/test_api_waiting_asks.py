"""Issue 12 #4: asks waiting for a tell (``wait_s``) hold no worker thread, so they cannot freeze the API.

Before: each waiting ask held one of ~40 worker threads; 45 asks with ``wait_s: 15`` on a generation-locked
CMA-ES study made ``GET /health`` take 13 s. Here 200 asks wait on loopback while /health is timed, then one
tell round completes the study and every waiter returns at once (woken, not timed out).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

from evomerge.client import EvomergeClient

from ..server.common import score, zdt1_study
from ..server.conftest import ThreadServer

WAITERS = 200
WAIT_S = 30.0


async def _post(host: str, port: int, path: str, body: dict) -> tuple[int, dict]:
    """One HTTP/1.1 POST on its own connection (asyncio: 200 of them need no client threads either)."""
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def _get_seconds(host: str, port: int, path: str) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200"), raw[:100]
    return time.perf_counter() - start


def test_health_answers_at_once_while_200_asks_wait_and_a_tell_wakes_them_all(tmp_path):
    server = ThreadServer(tmp_path / "studies")
    host, port = server.url.removeprefix("http://").split(":")
    client = EvomergeClient(server.url)
    try:
        # CMA-ES, popsize 6, a budget of one generation: once it is handed out, every further ask must wait
        client.create_study(zdt1_study("gen", "cma", evaluations=6))
        generation = client.ask("gen", 6)
        assert len(generation) == 6

        async def scenario() -> tuple[list[float], list[tuple[int, dict]], float]:
            waiters = [asyncio.create_task(_post(host, int(port), "/studies/gen/ask", {"n": 1, "wait_s": WAIT_S}))
                       for _ in range(WAITERS)]
            await asyncio.sleep(2.0)  # every ask has reached the server and is waiting
            assert not any(w.done() for w in waiters), "asks returned instead of waiting"
            health = [await _get_seconds(host, int(port), "/health") for _ in range(5)]
            assert not any(w.done() for w in waiters)
            told_at = time.monotonic()
            await asyncio.to_thread(lambda: [client.tell("gen", c, score(c)) for c in generation])
            replies = await asyncio.wait_for(asyncio.gather(*waiters), timeout=WAIT_S / 2)
            return health, replies, time.monotonic() - told_at

        health, replies, woke_s = asyncio.run(scenario())
        ms = [round(h * 1000, 1) for h in health]
        print(f"/health with {WAITERS} asks waiting: {ms} ms; all woke {woke_s:.2f} s after the tells")
        assert statistics.median(health) < 0.1 and max(health) < 1.0, health
        assert all(status == 200 for status, _ in replies)
        assert all(r["complete"] and r["candidates"] == [] for _, r in replies)  # woken by the last tell
        assert woke_s < WAIT_S / 2
    finally:
        server.stop()
