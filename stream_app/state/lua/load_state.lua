--[==[
Load one customer's state into the worker that owns it, and claim it (fencing).

KEYS: H D X K E O (``CustomerKeys.script_keys`` without L)
ARGV: 1 the owner's fence generation of the customer's partition group (0: not fenced, a
      process fed by hand or a tool), 2 the owner field
Returns {0} when a newer owner has claimed the customer (this worker is a zombie), else
{1, HGETALL H, HGETALL D, HGETALL X, HGETALL K, HGETALL E, LRANGE O}.
Claiming on load, not only on write, is what stops a zombie from writing between the new
owner's load and its first write.
]==]
local H = KEYS[1]
local gen, OWN = tonumber(ARGV[1]), ARGV[2]
local own = tonumber(redis.call('HGET', H, OWN) or '0')
if gen > 0 and own > gen then return {0} end
if own < gen then redis.call('HSET', H, OWN, ARGV[1]) end
return {1, redis.call('HGETALL', H), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
        redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]), redis.call('LRANGE', KEYS[6], 0, -1)}
