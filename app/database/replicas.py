"""Read replicas: a pool per streaming standby, their health and lag, and which one a read
goes to.

`db.read_session()` reads on a replica that answers and lags at most `max_replica_lag`
seconds, else on the primary. Lag is measured against the primary, not against the
standby's own clock: every `replica_check_interval` the monitor reads the primary's WAL
position and each replica's replayed position, and a replica lags by how long ago the
primary was where the replica is now (a standby of an idle primary lags by nothing, however
old its last replayed transaction; a standby whose replay is paused while the primary writes
falls behind by the time since). A replica that fails a check or a checkout is left out
until a check finds it well again.

Read-your-writes: `after=` (a WAL position from `db.current_lsn()` after a write) sends the
read to a replica only where that position is replayed; where the last check does not show
it, the read's transaction asks the replica itself first (one round trip more), and goes to
the primary when it has not.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool

from app.database.config import describe_conninfo
from app.database.errors import InvalidInputError
from app.database.transactions import PooledConnection

logger = logging.getLogger("agentdb")

Connection = psycopg.AsyncConnection[Any]

# Where the primary's WAL ends: a commit is in it once its call returned, also with
# synchronous_commit off (the write position could still be behind it then). The insert
# position of an empty page points past the page's header, where no record ends: see
# wal_end().
SELECT_PRIMARY_LSN = """
SELECT pg_catalog.pg_current_wal_insert_lsn()::text,
       pg_catalog.current_setting('wal_block_size')::bigint,
       (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size')
"""

# PostgreSQL's WAL page headers: the first page of a segment has the long one.
SHORT_PAGE_HEADER = 24
LONG_PAGE_HEADER = 40

# A standby says it is one, and how far it has replayed.
SELECT_REPLICA_STATE = """
SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_replay_lsn()::text
"""

# Asked inside a read transaction on a replica, before the caller's first statement.
SELECT_REPLAYED = "SELECT pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn"

CHECKOUT_TIMEOUT = 2.0
"""Seconds a read waits for a replica's connection before it reads on the primary (a
stopped standby costs one read this much once, then the replica is left out)."""


def parse_lsn(lsn: str) -> int:
    """A WAL position (`pg_lsn` text, `16/B374D848`) as an integer, for comparing."""
    high, sep, low = lsn.strip().partition("/")
    try:
        if not sep:
            raise ValueError(lsn)
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise InvalidInputError(
            f"after: not a WAL position (like '0/16B3748', from db.current_lsn()): {lsn!r}",
            field="after",
        ) from None


def format_lsn(position: int) -> str:
    """`parse_lsn`'s inverse."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def wal_end(insert_lsn: str, block_size: int, segment_size: int) -> int:
    """The end of the primary's last WAL record, from its insert position: the same, but on
    a page with nothing on it yet, where the insert position is past the page's header and
    the last record ended at the page's start (a standby that replayed it stops there)."""
    position = parse_lsn(insert_lsn)
    if position % segment_size == LONG_PAGE_HEADER:
        return position - LONG_PAGE_HEADER
    if position % block_size == SHORT_PAGE_HEADER:
        return position - SHORT_PAGE_HEADER
    return position


@dataclass
class Replica:
    """One standby: its pool and what the last check found."""

    name: str  # its URL without the password, for logs
    pool: psycopg_pool.AsyncConnectionPool[PooledConnection]
    is_healthy: bool = False
    replayed: int | None = None  # the replayed WAL position at the last check
    lag: float | None = None  # seconds behind the primary at the last check
    reason: str = "not checked yet"

    def mark_down(self, reason: str) -> None:
        if self.is_healthy or self.reason != reason:
            logger.warning("agentdb: replica %s left out: %s", self.name, reason)
        self.is_healthy, self.reason = False, reason


@dataclass
class PrimaryHistory:
    """The primary's WAL position at recent checks, to date a replica's position by."""

    span: float  # seconds of history kept
    times: deque[float] = field(default_factory=deque)
    positions: deque[int] = field(default_factory=deque)

    def add(self, at: float, position: int) -> None:
        self.times.append(at)
        self.positions.append(position)
        while len(self.times) > 2 and at - self.times[1] > self.span:
            self.times.popleft()
            self.positions.popleft()

    def lag(self, replayed: int, now: float) -> float:
        """Seconds since the primary was at `replayed`: 0 when the replica has what the
        primary had at the last check; the whole span when it is behind all of it."""
        if not self.positions or replayed >= self.positions[-1]:
            return 0.0
        # The first check at which the primary was past `replayed`: the replica has
        # nothing newer than the check before it.
        index = bisect.bisect_right(list(self.positions), replayed)
        if index == 0:
            return max(now - self.times[0], self.span)
        return now - self.times[index]


class ReplicaSet:
    """The replicas of one DatabaseManager: their pools and the monitor that checks them."""

    def __init__(
        self,
        conninfos: Sequence[str],
        *,
        max_lag: float,
        check_interval: float,
        pool_kwargs: dict[str, Any],
    ) -> None:
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.history = PrimaryHistory(span=max(4 * max_lag, 10 * check_interval))
        self.replicas = [
            Replica(
                describe_conninfo(conninfo),
                psycopg_pool.AsyncConnectionPool(conninfo, open=False, **pool_kwargs),
            )
            for conninfo in conninfos
        ]
        self._next = 0
        self._monitor: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self, primary: psycopg_pool.AsyncConnectionPool[PooledConnection]) -> None:
        """Open the pools without waiting (a replica that is down does not stop the
        application), check them once, and start the monitor."""
        for replica in self.replicas:
            await replica.pool.open(wait=False)
        await self.check(primary)
        self._monitor = asyncio.create_task(self._watch(primary), name="agentdb replicas")

    async def close(self) -> None:
        """Stop the monitor and close the pools. The monitor also ends by itself once it sees
        the set closing: a cancel that lands as a check's timeout expires can be taken
        for that timeout (asyncio.timeout, wait_for), and the loop would otherwise go on."""
        self._closing = True
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.wait({self._monitor}, timeout=self.check_interval + 3 * CHECKOUT_TIMEOUT)
            self._monitor = None
        for replica in self.replicas:
            await replica.pool.close()

    def candidates(self, after: int | None) -> list[Replica]:
        """The healthy replicas, in turn (round robin); with `after`, those the last check
        saw at or past it first."""
        healthy = [replica for replica in self.replicas if replica.is_healthy]
        if not healthy:
            return []
        start = self._next % len(healthy)
        self._next += 1
        ordered = healthy[start:] + healthy[:start]
        if after is not None:
            ordered.sort(key=lambda replica: not has_replayed(replica, after))
        return ordered

    async def check(self, primary: psycopg_pool.AsyncConnectionPool[PooledConnection]) -> None:
        """Read the primary's WAL position, then each replica's state and lag."""
        try:
            async with primary.connection(timeout=CHECKOUT_TIMEOUT) as conn:
                row = await (await conn.execute(SELECT_PRIMARY_LSN)).fetchone()
        except (psycopg.Error, OSError):
            return  # the primary is away: leave the replicas as they were
        assert row is not None
        self.history.add(time.monotonic(), wal_end(*row))
        await asyncio.gather(*(self._check_replica(replica) for replica in self.replicas))

    async def _check_replica(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(CHECKOUT_TIMEOUT):
                async with replica.pool.connection(timeout=CHECKOUT_TIMEOUT) as conn:
                    cursor = await conn.execute(SELECT_REPLICA_STATE)
                    row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as error:
            replica.mark_down(f"no answer ({type(error).__name__}: {str(error).strip()})")
            return
        assert row is not None
        in_recovery, replayed = row
        if not in_recovery or replayed is None:
            replica.mark_down("not a standby (pg_is_in_recovery() is false)")
            return
        replica.replayed = parse_lsn(replayed)
        replica.lag = self.history.lag(replica.replayed, time.monotonic())
        if replica.lag > self.max_lag:
            replica.mark_down(f"{replica.lag:.1f} s behind the primary (max_replica_lag)")
            return
        if not replica.is_healthy:
            logger.info("agentdb: replica %s in use (%.1f s behind)", replica.name, replica.lag)
        replica.is_healthy, replica.reason = True, "healthy"

    async def _watch(self, primary: psycopg_pool.AsyncConnectionPool[PooledConnection]) -> None:
        while not self._closing:
            await asyncio.sleep(self.check_interval)
            if self._closing:
                return
            try:
                await self.check(primary)
            except Exception:  # never let the monitor die: the next check tries again
                logger.exception("agentdb: checking the replicas failed")


def has_replayed(replica: Replica, after: int) -> bool:
    """Whether the last check saw `replica` at or past WAL position `after`."""
    return replica.replayed is not None and replica.replayed >= after
