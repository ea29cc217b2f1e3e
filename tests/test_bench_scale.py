"""bench/scale.py's arithmetic, and its load generator spread over several web processes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bench.rawload import build_request, send_all
from bench.scale import throughput_bound
from tests.pg import free_port


def test_the_throughput_bound_is_the_cores_shared_by_every_role_or_one_role_s_own_processes() -> None:
    role_ms = {"web": 1.0, "worker": 2.0, "postgres": 1.0}  # 4 ms of CPU per delivery in all
    assert throughput_bound(role_ms, {"web": 2, "worker": 4, "postgres": 8}, cores=8) == 2000  # 8 cores / 4 ms
    assert throughput_bound(role_ms, {"web": 2, "worker": 1, "postgres": 8}, cores=8) == 500  # one worker: 1 core / 2 ms
    assert throughput_bound(role_ms, {"web": 8, "worker": 8}, cores=2) == 500  # 2 cores / 4 ms; postgres unbounded


async def test_the_load_generator_alternates_between_servers_one_request_at_a_time_at_c1() -> None:
    arrivals: list[int] = []
    in_flight = 0
    most_in_flight = 0

    def server(index: int):
        async def handle(request: web.Request) -> web.Response:
            nonlocal in_flight, most_in_flight
            arrivals.append(index)
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            await asyncio.sleep(0)  # let another connection send meanwhile, were it allowed to
            in_flight -= 1
            return web.Response(status=202)
        app = web.Application()
        app.router.add_post("/hook", handle)
        return app

    runners = []
    ports = [free_port(), free_port()]
    try:
        for index, port in enumerate(ports):
            runner = web.AppRunner(server(index))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        requests = ((i, build_request("127.0.0.1", "/hook", {}, b"{}")) for i in range(6))
        answers: list[int] = []
        await send_all("127.0.0.1", ports, requests, 1, lambda key, sent, at, status: answers.append(status))
    finally:
        for runner in runners:
            await runner.cleanup()
    assert answers == [202] * 6
    assert arrivals == [0, 1, 0, 1, 0, 1]
    assert most_in_flight == 1
