"""Job records in Redis (``CLUSTERBENCH_REDIS_URL``), shared by any number of replicas.

The same interface as :class:`service.jobs.records.JobStore`. A job is one hash
(``clusterbench:job:<id>``) holding every field of
:class:`service.jobs.records.JobRecord` as JSON, so a field added to the dataclass later
is stored and read back without a change here.
Beside it: ``jobs`` (a sorted set of ids by sequence number, for listing),
``jobs-active`` (the ids of queued or running jobs, for the sweep for orphans),
``job-for:<key>`` (the latest job of a question, for joining) and ``job-seq``.

Creating or joining is one optimistic transaction (``WATCH job-for:<key>``, ``MULTI``):
two replicas asked the same question at once make one job. Every conditional write
(save unless finished, heartbeat, claim) is a Lua script, so it is atomic.
Jobs are never evicted (see :mod:`service.redis_store` on ``maxmemory-policy``): a finished
job is removed ``CLUSTERBENCH_JOB_RETENTION_S`` after it finished, found through
``jobs-finished`` (a sorted set of finished ids by the time they finished).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from service.jobs.records import RELEASED, JobBackend, JobQuery, JobRecord, orphan_end
from service.redis_connection import PREFIX, Guard, connect, newest_first
from service.schemas import ACTIVE_STATES

logger = logging.getLogger(__name__)

# KEYS[1]: the job; ARGV: prefix, id, the number n of (field, JSON value) pairs that
# follow, those pairs, then the pairs of the fields a save never changes. Written only
# while the record is active: a job cancelled by another replica stays cancelled. A record
# that is not there at all was lost (Redis restarted without its append-only file): it is
# written whole again, with its index entries, so the job and its result are not lost too.
_SAVE = """
local p, id = ARGV[1], ARGV[2]
local last = 3 + 2 * tonumber(ARGV[3])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  local fixed = {}
  for i = last + 1, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    fixed[ARGV[i]] = ARGV[i + 1]
  end
  local seq = tonumber(fixed['seq'])
  redis.call('ZADD', p .. 'jobs', seq, id)
  if tonumber(redis.call('GET', p .. 'job-seq') or '0') < seq then
    redis.call('SET', p .. 'job-seq', seq)
  end
  redis.call('SET', p .. 'job-for:' .. cjson.decode(fixed['key']), id, 'NX')
  redis.call('SADD', p .. 'jobs-active', id)
elseif state ~= '"queued"' and state ~= '"running"' then
  return 0
end
local new, finished
for i = 4, last, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] == 'state' then new = ARGV[i + 1] end
  if ARGV[i] == 'finished' then finished = tonumber(ARGV[i + 1]) end
end
if new ~= '"queued"' and new ~= '"running"' then
  redis.call('SREM', p .. 'jobs-active', id)
  redis.call('ZADD', p .. 'jobs-finished', finished or 0, id)
end
return 1
"""

# KEYS: none; ARGV: prefix, finished before (seconds), most to remove. Removes finished
# jobs with their index entries (and their question's pointer when it names them);
# returns their ids.
_PRUNE = """
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'jobs-finished', '-inf', '(' .. ARGV[2],
                       'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = redis.call('HGET', p .. 'job:' .. id, 'key')
  if key then
    local pointer = p .. 'job-for:' .. cjson.decode(key)
    if redis.call('GET', pointer) == id then redis.call('DEL', pointer) end
  end
  redis.call('DEL', p .. 'job:' .. id)
  redis.call('ZREM', p .. 'jobs', id)
  redis.call('ZREM', p .. 'jobs-finished', id)
end
return ids
"""

# KEYS[1]: the job; ARGV: owner (JSON), now. Returns the state (JSON) or nil.
_BEAT = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'heartbeat', ARGV[2])
end
return redis.call('HGET', KEYS[1], 'state')
"""

# KEYS[1]: the job; ARGV: old owner (JSON), new owner (JSON), now.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if state ~= '"queued"' and state ~= '"running"' then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'heartbeat', ARGV[3])
return 1
"""

# KEYS[1]: the job; ARGV: owner (JSON), released (JSON). Queued again, owned by no process.
_RELEASE = """
local state = redis.call('HGET', KEYS[1], 'state')
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if state ~= '"queued"' and state ~= '"running"' then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'heartbeat', '0', 'state', '"queued"',
           'stage', ARGV[2])
return 1
"""


def _dump(value: Any) -> bytes:
    return orjson.dumps(value)


def job_to_hash(job: JobRecord) -> dict[str, bytes]:
    """Every field of ``job`` as JSON."""
    return {name: _dump(value) for name, value in job.fields().items()}


def job_from_hash(data: dict[bytes, bytes]) -> JobRecord:
    """A job from its hash; fields this version does not know are left out."""
    return JobRecord.from_fields({k.decode(): orjson.loads(v) for k, v in data.items()})


class RedisJobStore(JobBackend):
    """Job records in Redis, shared by every replica on the same Redis."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.url = url
        # Any: redis-py's types mix its sync and async replies.
        self.redis: Any = connect(url, timeout_s=timeout_s)
        self._call = Guard(url, timeout_s)
        self._save = self.redis.register_script(_SAVE)
        self._prune = self.redis.register_script(_PRUNE)
        self._beat = self.redis.register_script(_BEAT)
        self._claim = self.redis.register_script(_CLAIM)
        self._release = self.redis.register_script(_RELEASE)

    @staticmethod
    def _key(job_id: str) -> str:
        return PREFIX + "job:" + job_id

    def _read(self, ids: Sequence[str]) -> list[JobRecord]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key(job_id))
        return [job_from_hash(found) for found in pipe.execute() if found]

    def _create_or_join(
        self, key: str, new: Callable[[int], JobRecord], alive: Callable[[JobRecord], bool]
    ) -> tuple[JobRecord, bool]:
        """One optimistic transaction on the question's pointer (see the module)."""
        pointer = PREFIX + "job-for:" + key

        def attempt(pipe: Any) -> tuple[JobRecord, bool]:
            found_id = pipe.get(pointer)
            found = None
            if found_id is not None:
                # Watched too: another replica may claim it (recover) before this writes.
                pipe.watch(self._key(found_id.decode()))
                data = pipe.hgetall(self._key(found_id.decode()))
                found = job_from_hash(data) if data else None
            if found is not None and found.state in ACTIVE_STATES and alive(found):
                return found, False
            seq = int(self.redis.incr(PREFIX + "job-seq"))
            job = new(seq)
            pipe.multi()
            if found is not None and found.state in ACTIVE_STATES:
                end = orphan_end(time.time())
                pipe.hset(self._key(found.id), mapping={name: _dump(v) for name, v in end.items()})
                pipe.srem(PREFIX + "jobs-active", found.id)
                pipe.zadd(PREFIX + "jobs-finished", {found.id: end["finished"]})
            pipe.hset(self._key(job.id), mapping=job_to_hash(job))
            pipe.zadd(PREFIX + "jobs", {job.id: seq})
            pipe.sadd(PREFIX + "jobs-active", job.id)
            pipe.set(pointer, job.id)
            return job, True

        def run() -> tuple[JobRecord, bool]:
            result: tuple[JobRecord, bool] = self.redis.transaction(
                attempt, pointer, value_from_callable=True
            )
            return result

        return self._call("a job write", run)

    def get(self, job_id: str) -> JobRecord | None:
        found = self._call.read("a job read", lambda: self.redis.hgetall(self._key(job_id)))
        return job_from_hash(found) if found else None

    def save(self, job: JobRecord) -> bool:
        # A record that is gone was lost by a Redis restart: _SAVE writes it whole again.
        progress, fixed = job.saved(time.time())
        args: list[Any] = [PREFIX, job.id, len(progress)]
        for name, value in (*progress.items(), *fixed.items()):
            args += [name, _dump(value)]
        return bool(
            self._call("a job write", lambda: self._save(keys=[self._key(job.id)], args=args))
        )

    def beat(self, job_id: str, owner: str) -> str | None:
        state = self._call(
            "a job heartbeat",
            lambda: self._beat(keys=[self._key(job_id)], args=[_dump(owner), _dump(time.time())]),
        )
        return None if state is None else str(orjson.loads(state))

    def select(self, query: JobQuery) -> list[JobRecord]:
        state, before, limit = query.state, query.before, query.limit

        def keep(job: JobRecord) -> bool:
            return (state is None or job.state == state) and (before is None or job.seq < before)

        among = query.among
        if among is not None:
            jobs = self._call.read("a job list", lambda: self._read(list(dict.fromkeys(among))))
            return sorted(filter(keep, jobs), key=lambda j: j.seq, reverse=True)[:limit]
        high = "+inf" if before is None else f"({before}"
        out: list[JobRecord] = []
        batches = newest_first(
            self._call,
            self.redis,
            PREFIX + "jobs",
            high,
            batch=max(limit, 16) + 1,
            doing="a job list",
        )
        for ids in batches if limit > 0 else ():
            jobs = self._call.read(
                "a job list", functools.partial(self._read, [i.decode() for i in ids])
            )
            out.extend(filter(keep, jobs))
            if len(out) >= limit:
                break
        return out[:limit]

    def orphans(self, alive: Callable[[JobRecord], bool]) -> list[JobRecord]:
        def read() -> list[JobRecord]:
            ids = [i.decode() for i in self.redis.smembers(PREFIX + "jobs-active")]
            return self._read(ids)

        jobs = self._call.read("a job list", read)
        return sorted(
            (j for j in jobs if j.state in ACTIVE_STATES and not alive(j)), key=lambda j: j.seq
        )

    def claim(self, job_id: str, old_owner: str, new_owner: str) -> bool:
        return bool(
            self._call(
                "a job claim",
                lambda: self._claim(
                    keys=[self._key(job_id)],
                    args=[_dump(old_owner), _dump(new_owner), _dump(time.time())],
                ),
            )
        )

    def release(self, job_id: str, owner: str) -> bool:
        return bool(
            self._call(
                "a job release",
                lambda: self._release(
                    keys=[self._key(job_id)], args=[_dump(owner), _dump(RELEASED)]
                ),
            )
        )

    def prune(self, before: float, limit: int = 1000) -> list[str]:
        ids = self._call("a job prune", lambda: self._prune(args=[PREFIX, repr(before), limit]))
        return [i.decode() for i in ids]

    def close(self) -> None:
        self.redis.close()
