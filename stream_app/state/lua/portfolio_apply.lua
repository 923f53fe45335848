--[[
Replace customers' contributions to period sums, atomically (portfolio KPIs).

Each period has a hash of contributions (customer id -> record) and a hash of running sums
("<group>:<field>" -> integer). Replacing a customer's record subtracts the old record's
values from the sums and adds the new one's, in one script: the sums are always exactly the
total of the stored records. Writing a record equal to the stored one changes nothing, so a
replayed or redelivered event (which leaves the customer's state, hence its record, as it
was) can never count twice. All keys share one hash tag: single-slot on Redis Cluster.

Record text (built by stream_app/contributions.py):
  "<groups>|<values>|<anything else>"
  groups: ';'-separated; "name" sums every value into "name:<field>", "name:f1.f2" only those
  values: ','-separated integers, positional over ARGV[1]'s field names (missing = 0)
  ''     = no record (delete)

Versions: a record is computed from the customer's state, and two refreshes of one customer
may run concurrently (several agents in a worker, or a worker being replaced): the one that
read the older state must not overwrite the newer. Each write carries the customer's count of
applied events (monotone); a write older than the customer's stored version is skipped.

KEYS: 1 meta hash (floor:<kind> = oldest period label still writable)
      2 versions hash (customer id -> newest version written)
      then (contributions hash, sums hash) for each period the call touches
ARGV: 1 field names, comma-separated
      2 mode: 'r' replace; 'n' write only where the customer has no record (carry-over)
      3 JSON array of [pair number (1-based; 0 = only the version), period kind, period label,
        customer id, record, version or false]
Returns the number of records changed.
]]

local META, V = KEYS[1], KEYS[2]
local names = {}
for n in string.gmatch(ARGV[1], '[^,]+') do names[#names + 1] = n end
local index = nil
local mode = ARGV[2]
local items = cjson.decode(ARGV[3])

local versions = {}
-- false if a newer state of this customer was already written; records the version otherwise
local function current(cid, ver)
  if not ver then return true end
  local cur = versions[cid]
  if cur == nil then
    cur = tonumber(redis.call('HGET', V, cid) or '-1')
    versions[cid] = cur
  end
  if ver < cur then return false end
  if ver > cur then
    redis.call('HSET', V, cid, ver)
    versions[cid] = ver
  end
  return true
end

local floors = {}
local function floor_of(kind)
  if floors[kind] == nil then floors[kind] = redis.call('HGET', META, 'floor:' .. kind) or false end
  return floors[kind]
end

-- add sign x record into delta[field]
local function accumulate(rec, sign, delta)
  local bar = string.find(rec, '|', 1, true)
  local groups = string.sub(rec, 1, bar - 1)
  local bar2 = string.find(rec, '|', bar + 1, true)
  local vals = {}
  for x in string.gmatch(string.sub(rec, bar + 1, (bar2 or 0) - 1), '[^,]+') do vals[#vals + 1] = tonumber(x) end
  for g in string.gmatch(groups, '[^;]+') do
    local colon = string.find(g, ':', 1, true)
    if colon then
      if index == nil then
        index = {}
        for i, n in ipairs(names) do index[n] = i end
      end
      local gname = string.sub(g, 1, colon - 1)
      for f in string.gmatch(string.sub(g, colon + 1), '[^.]+') do
        local v = vals[index[f]] or 0
        if v ~= 0 then
          local k = gname .. ':' .. f
          delta[k] = (delta[k] or 0) + sign * v
        end
      end
    else
      for i = 1, #vals do
        local v = vals[i]
        if v ~= 0 then
          local k = g .. ':' .. names[i]
          delta[k] = (delta[k] or 0) + sign * v
        end
      end
    end
  end
end

local changed = 0
for _, it in ipairs(items) do
  local pair, kind, label, cid, rec, ver = it[1], it[2], it[3], it[4], it[5], it[6]
  local fl = pair > 0 and floor_of(kind)
  -- a period below the floor has had its contributions dropped: writing there would count
  -- the customer again, so it is closed
  if current(cid, ver) and pair > 0 and not (fl and label < fl) then
    local C, S = KEYS[2 * pair + 1], KEYS[2 * pair + 2]
    local old = redis.call('HGET', C, cid)
    if not (mode == 'n' and old) and (old or '') ~= rec then
      local delta = {}
      if old then accumulate(old, -1, delta) end
      if rec ~= '' then accumulate(rec, 1, delta) end
      for k, d in pairs(delta) do
        if d ~= 0 then
          if redis.call('HINCRBY', S, k, d) == 0 then redis.call('HDEL', S, k) end
        end
      end
      if rec == '' then redis.call('HDEL', C, cid) else redis.call('HSET', C, cid, rec) end
      changed = changed + 1
    end
  end
end
return changed
