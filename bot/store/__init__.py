"""The repository layer: every database read and write of the app goes through `Store`."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import text

from bot.crypto import Crypto
from bot.db import Database
from bot.store.agent_runs import AgentRunStore
from bot.store.audit import AuditStore, HeartbeatStore
from bot.store.deliveries import DeliveryStore, IncomingDelivery, StoredDelivery
from bot.store.jobs import ClaimedJob, JobStore
from bot.store.delivery_log import DeliveryLogStore
from bot.store.leases import AppStateStore, LeaseStore
from bot.store.merge_queue import MergeQueueStore, StoredQueue
from bot.store.projects import InstallationRef, InvalidSecret, ProjectStore, RepoRef
from bot.store.pull_requests import MergeClaim, PullRequestStore
from bot.store.tracked_pulls import TrackedPullStore
from bot.store.validations import ValidationLifetime, ValidationStore
from bot.store.write_lanes import WriteLaneStore

__all__ = ["Store", "IncomingDelivery", "StoredDelivery", "ClaimedJob", "InstallationRef", "RepoRef",
           "InvalidSecret", "MergeClaim", "ValidationLifetime", "StoredQueue"]


class Store:
    def __init__(self, db: Database, crypto: Crypto, *, github_url: str = "https://github.com",
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: the monotonic clock of the short-lived caches (tests move it on instead of sleeping)."""
        self.db = db
        self.deliveries = DeliveryStore(db)
        self.jobs = JobStore(db)
        self.projects = ProjectStore(db, crypto, github_url=github_url, clock=clock)
        self.audit = AuditStore(db)
        self.heartbeats = HeartbeatStore(db)
        self.validations = ValidationStore(db, self.jobs)
        self.agent_runs = AgentRunStore(db)
        self.pull_requests = PullRequestStore(db)
        self.tracked_pulls = TrackedPullStore(db)
        self.leases = LeaseStore(db)
        self.app_state = AppStateStore(db)
        self.write_lanes = WriteLaneStore(db)  # PostgreSQL: which process sends an installation's GitHub writes
        self.delivery_log = DeliveryLogStore(db)  # the delivery-log sweep's known guids and skipped entries
        self.merge_queues = MergeQueueStore(db)  # each base branch's own merge queue, and its landings

    async def ping(self) -> None:
        await self.db.read(lambda conn: conn.execute(text("SELECT 1")))

    async def close(self) -> None:
        await self.deliveries.close()
        await self.audit.close()
        await self.validations.close()
        await self.agent_runs.close()
        await self.projects.close()
        await self.db.dispose()
