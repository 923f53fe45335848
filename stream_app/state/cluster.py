"""What differs on Redis Cluster (``REDIS_CLUSTER=true``), for the few places it matters.

The layout keeps every atomic unit in one slot (a customer's keys share its hash tag, the
portfolio's share ``{pf}``), and redis-py's ``RedisCluster`` routes each command, splits
``DEL``/``UNLINK``/``EXISTS`` by slot, sends ``SCRIPT LOAD`` to every primary and makes
``scan_iter`` visit every primary. What it cannot do is left to the callers, with these:

* a script called inside a cluster pipeline is not loaded for it (a plain pipeline loads
  its scripts first): :func:`load_script` loads it on every primary, and a ``NoScriptError``
  (a node restarted or failed over) means load it again and retry;
* a script or transaction may only touch keys of one slot: :func:`is_cluster` tells the
  callers that must then work key by key (the tiles' pass, the learner's commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError


def is_cluster(redis: Any) -> bool:
    """The client talks to a Redis Cluster."""
    return isinstance(redis, RedisCluster)


async def load_script(redis: Any, source: str) -> str:
    """``SCRIPT LOAD`` (on every primary of a cluster); returns the SHA."""
    return str(await redis.script_load(source))


class PipelinedScript:
    """A Lua script run many times in one pipeline, on a plain Redis or a cluster: loaded
    once (on every primary), loaded again and the whole pipeline retried once after a
    ``NoScriptError``, so the script must be idempotent (or read-only). Each call's keys must
    share one slot."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha: str | None = None

    async def run(self, redis: Any, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """One reply per ``(keys, args)`` call, in order."""
        for attempt in (0, 1):
            if self.sha is None:
                self.sha = await load_script(redis, self.source)
            pipe = redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:  # a node restarted, failed over or flushed its scripts
                self.sha = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


#: check-and-set of one string key: KEYS[1] is set to ARGV[2] if it holds ARGV[1]; 1 if it did
CHECK_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
