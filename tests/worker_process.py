"""A worker process for the crash tests: `python -m tests.worker_process DATABASE_URL hang|finish`.

Its one job kind, "probe", prints `started <job id> <attempt>` and then either hangs (to be killed)
or prints `finished <job id>` and returns. SIGTERM stops the worker gracefully (grace 0.2 s).
"""

import asyncio
import signal
import sys

from bot.crypto import Crypto
from bot.db import Database
from bot.store import ClaimedJob, Store
from worker.runner import Worker


async def main(database_url: str, mode: str) -> None:
    store = Store(Database(database_url), Crypto(Crypto.generate_key()))

    async def probe(job: ClaimedJob) -> None:
        print(f"started {job.id} {job.attempts}", flush=True)
        if mode == "hang":
            await asyncio.Event().wait()
        print(f"finished {job.id}", flush=True)

    worker = Worker(store, {"probe": probe}, concurrency=2, lease_seconds=2, poll_interval=0.2)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    print("ready", flush=True)
    await stop.wait()
    await worker.stop(grace=0.2)
    await store.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
