--[==[
Write what changed in the memory of the worker that owns these customers: once per drain,
many customers per call (on Redis Cluster, one call per hash slot).

KEYS: 7 per customer: H D X K E L O (``CustomerKeys.script_keys``)
ARGV: 1 the owner field, 2 retention (ms, 0 = keep forever), then per customer:
  its fence generation (0: not fenced), and a JSON array:
  [reset, new day, {H set}, [H del], {D set}, [D del], {X set}, [X del], {K set}, [K del],
   {E set}, [E del], {L set}, [O entries to append]]
Each customer is checked and written whole, so a crash leaves it all or nothing of a drain.
Returns one status per customer: 1 written, 0 fenced (a newer owner claimed it: nothing written).
]==]
local OWN, RET = ARGV[1], tonumber(ARGV[2])
local function hset_all(key, map)
  local args, n = {}, 0
  for f, v in pairs(map) do
    args[n + 1] = f; args[n + 2] = v; n = n + 2
    if n >= 200 then redis.call('HSET', key, unpack(args, 1, n)); n = 0 end
  end
  if n > 0 then redis.call('HSET', key, unpack(args, 1, n)) end
end
local function hdel_all(key, list)
  for i = 1, #list, 200 do redis.call('HDEL', key, unpack(list, i, math.min(i + 199, #list))) end
end
local out = {}
for c = 0, (#KEYS / 7) - 1 do
  local H, O = KEYS[c * 7 + 1], KEYS[c * 7 + 7]
  local gen = tonumber(ARGV[3 + c * 2])
  local own = tonumber(redis.call('HGET', H, OWN) or '0')
  if gen > 0 and own > gen then
    out[c + 1] = 0
  else
    local w = cjson.decode(ARGV[4 + c * 2])
    if w[1] == 1 then redis.call('DEL', H, KEYS[c * 7 + 2], KEYS[c * 7 + 3], KEYS[c * 7 + 4], KEYS[c * 7 + 5], KEYS[c * 7 + 6]) end
    for h = 0, 4 do
      hset_all(KEYS[c * 7 + 1 + h], w[3 + 2 * h])
      hdel_all(KEYS[c * 7 + 1 + h], w[4 + 2 * h])
    end
    hset_all(KEYS[c * 7 + 6], w[13])
    if #w[14] > 0 then
      for i = 1, #w[14], 200 do redis.call('RPUSH', O, unpack(w[14], i, math.min(i + 199, #w[14]))) end
    end
    if gen > 0 and (gen > own or w[1] == 1) then redis.call('HSET', H, OWN, gen) end
    if w[2] == 1 and RET > 0 then
      for k = 1, 6 do redis.call('PEXPIRE', KEYS[c * 7 + k], RET) end
    end
    out[c + 1] = 1
  end
end
return out
