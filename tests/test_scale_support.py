"""The chaos test's harness (tests/scale_support.py) on its own: the load balancer, the sender's redelivery and
the killer, without the app."""

from __future__ import annotations

import asyncio
import collections

import aiohttp
from aiohttp import web

from bot.config import WEBHOOK_PATH
from tests.fakes.github import FakeGitHub
from tests.scale_support import Delivery, Killer, RoundRobinProxy, open_pull_requests, send_until_acknowledged


async def test_a_dead_backend_is_a_502_and_the_sender_redelivers_the_same_guid(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    received: collections.Counter[str] = collections.Counter()

    async def accept(request: web.Request) -> web.Response:
        received[request.headers["X-GitHub-Delivery"]] += 1
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, accept)
    alive = await aiohttp_server(app)
    dead = await aiohttp_server(web.Application())
    dead_url = str(dead.make_url("")).rstrip("/")
    await dead.close()  # nothing listens there any more
    proxy = await RoundRobinProxy([dead_url, str(alive.make_url("")).rstrip("/")]).start()
    deliveries = [Delivery(f"guid-{i}", 1, f"{i:040x}", b"{}", {"X-GitHub-Delivery": f"guid-{i}"}) for i in range(4)]
    try:
        async with aiohttp.ClientSession() as session:
            await send_until_acknowledged(session, proxy.url, deliveries, per_second=100, give_up_after=10)
    finally:
        await proxy.close()
    assert received == {f"guid-{i}": 1 for i in range(4)}  # each acknowledged once, by the live backend
    assert all(d.acked == 202 for d in deliveries)
    assert proxy.answers[502] == sum(len(d.refusals) for d in deliveries) >= 2
    assert {status for d in deliveries for status in d.refusals} == {502}


class Stub:
    """Stands in for an AppProcess: counts kills and starts; a start takes `start_seconds`."""

    def __init__(self, name: str, start_seconds: float = 0.0) -> None:
        self.name = name
        self.start_seconds = start_seconds
        self.kills = 0
        self.starts = 0
        self.running = True

    async def kill(self) -> None:
        self.kills += 1
        self.running = False

    async def start(self) -> None:
        await asyncio.sleep(self.start_seconds)
        self.starts += 1
        self.running = True


async def kill_five(processes: list[Stub], seed: int) -> Killer:
    killer = Killer(processes, seed=seed, min_gap=0.01, max_gap=0.02)  # type: ignore[arg-type]
    killer.start()
    while len(killer.kills) < 5:
        await asyncio.sleep(0.005)
    await killer.stop()
    return killer


async def test_the_killer_restarts_each_process_it_kills_and_stop_waits_for_the_restarts() -> None:
    processes = [Stub("web1", 0.05), Stub("worker1", 0.05)]
    killer = await kill_five(processes, seed=3)
    assert all(p.running for p in processes)
    assert sum(p.kills for p in processes) == len(killer.kills) == sum(p.starts for p in processes)


async def test_the_seed_decides_which_processes_are_killed() -> None:
    first = await kill_five([Stub("web1"), Stub("web2"), Stub("worker1")], seed=5)
    second = await kill_five([Stub("web1"), Stub("web2"), Stub("worker1")], seed=5)
    assert [name for name, _ in first.kills[:5]] == [name for name, _ in second.kills[:5]]
    assert len({name for name, _ in first.kills}) > 1


async def test_pull_requests_come_in_bursts_per_installation(fake_github: FakeGitHub) -> None:
    deliveries = open_pull_requests(fake_github, count=6, installations=3, secret="s")
    assert [d.installation_id for d in deliveries] == [7000, 7000, 7001, 7001, 7002, 7002]
    assert len({d.guid for d in deliveries}) == len({d.head_sha for d in deliveries}) == 6
    assert all(d.headers["X-Hub-Signature-256"].startswith("sha256=") for d in deliveries)
