--[[
Apply a batch of one customer's validated events to its rolling state, atomically.

Why one script per customer batch: the update, the event_id de-duplication and the
offset bookkeeping must commit together (a crash can then only leave "all of it" or
"none of it"), and every key shares the customer's hash tag, so it is also
Redis Cluster safe.

KEYS (all hash-tagged with the customer):
  1 H  hash: scalars + sparse day buckets of tickets (t<day>), surveys (s<day>),
       subscriptions (b<day>) and MRR change points (m<day>)
  2 D  hash: activity day buckets  day -> "dur,other,c0,c1,..." (c_i = tracked action i)
  3 X  hash: last active day of each user (u<hash>) and feature (f<name>)
  4 K  hash: tickets  ticket<hash> -> "state,opened_ms,last_ms,weight"
  5 E  hash: "<day>.<k>" -> up to 7 concatenated 8-char event_id digests (de-duplication)
  6 L  hash: pending label snapshots ("<day>:<second>" -> frozen model features)
  7 O  list: outbox, the outputs of saved scores not yet acknowledged by the broker
ARGV:
  1 longest window (days)   2 dedupe horizon (days)   3 tracked actions N
  4 ticket retention (days) 5 max open tickets        6 max tracked users+features
  7 JSON array of events, each one of
     {"a", p, o, id, ts, action, user, feature, dur_s, count}
     {"t", p, o, id, ts, ticket, status, weight, sentiment_milli|false}
     {"s", p, o, id, ts, survey, score_milli}
     {"b", p, o, id, ts, status, mrr_cents, plan}
  8 '' or the score state of the customer's previous scored event, saved first (JSON array:
     day, score*10, {main-hash field: value}, snapshot field or '', snapshot text, history days;
     day -1: only the fields, e.g. the order key of a duplicate that was not scored; then the
     outputs of that score (alerts, score snapshot) for the outbox, published after the round).
  9 retention (ms, 0 = keep forever): a customer silent for longer than this (in event time)
     starts over when it returns, and its keys expire after this long without a new day
     (wall clock: live, event time and the clock agree; a replay finishes long before).
     Saving it in the same script as the next event's update is what makes "applied through
     event n" imply "scored through event n-1": after a crash only the last applied event can
     be unscored, and re-scoring it reads exactly the state it was first scored on.
  10 '1': also return the customer's state after the update (see below)
Returns one status per event: 1 applied, 2 duplicate event_id, 3 offset already applied;
with ARGV 10 = '1': {statuses, HGETALL H, HGETALL D, HGETALL X, HGETALL K, HLEN E}.

Why these structures (memory target <= 2 KiB per active customer):
  * day buckets in small hashes stay in Redis' compact listpack encoding (< 128 fields,
    values < 64 bytes): ~25 bytes per active day, and windows of any length <= the longest
    one are exact sums over days, so late events land in the right day and count.
  * distinct users/features keep a last-seen day per member instead of a HyperLogLog:
    accounts have tens of users, where a dense HLL (12 KB) costs far more, and last-seen
    days give every window's distinct count exactly, sliding with event time.
  * per-action counts only for the customer's N most frequent actions (slots), the rest
    pooled as "other": the action vocabulary is open, the state must not be.
]]

local H, D, X, K, E = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local MAXW = tonumber(ARGV[1])
local DEDUPE = tonumber(ARGV[2])
local NA = tonumber(ARGV[3])
local TRET = tonumber(ARGV[4])
local MOT = tonumber(ARGV[5])
local MU = tonumber(ARGV[6])
local evs = cjson.decode(ARGV[7])
local L, O = KEYS[6], KEYS[7]
local DAY = 86400000
local RET = tonumber(ARGV[9] or '0')

-- score state of the previous event (see ARGV 8) -------------------------------------------
if ARGV[8] ~= nil and ARGV[8] ~= '' then
  local sv = cjson.decode(ARGV[8])
  local sday, s10, fields, snap, snaptext, keep = sv[1], sv[2], sv[3], sv[4], sv[5], sv[6]
  if sv[7] and #sv[7] > 0 then redis.call('RPUSH', O, unpack(sv[7])) end
  for f, v in pairs(fields) do redis.call('HSET', H, f, v) end
  if sday >= 0 then redis.call('HSET', H, 'h' .. sday, s10, 'hs', s10) end
  if snap ~= '' then
    redis.call('HSET', L, snap, snaptext)
    redis.call('HSET', H, 'snd', string.match(snap, '^(-?%d+)'))  -- days before 1970 are negative
  end
  if sday >= 0 and tonumber(redis.call('HGET', H, 'hpd') or '-1') < sday then
    for _, f in ipairs(redis.call('HKEYS', H)) do
      local d = string.match(f, '^h(%d+)$')
      if d and tonumber(d) < sday - keep then redis.call('HDEL', H, f) end
    end
    redis.call('HSET', H, 'hpd', sday)
  end
end
local TOPIC_FIELD = {a = 'o:a', t = 'o:t', s = 'o:s', b = 'o:b'}

-- event_id digests kept for this customer (8 chars each), loaded once per call
local seen = nil
local function load_seen()
  seen = {}
  local all = redis.call('HGETALL', E)
  for i = 2, #all, 2 do
    local blob = all[i]
    for at = 1, string.len(blob) - 7, 8 do seen[string.sub(blob, at, at + 7)] = true end
  end
end

local function num(v, d)
  if v == false or v == nil then return d end
  return tonumber(v)
end

-- a before b in byte order: the tie-breaks between field names. Lua's '<' on strings
-- collates by the server's locale (Redis sets LC_COLLATE from its environment), which
-- the Python port (state/apply.py) could not follow.
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- comma-separated integer vectors (bucket values) -------------------------------------
local function vget(key, field, n)
  local raw = redis.call('HGET', key, field)
  local v = {}
  for i = 1, n do v[i] = 0 end
  if raw then
    local i = 1
    for x in string.gmatch(raw, '[^,]+') do v[i] = tonumber(x); i = i + 1 end
  end
  return v
end

local function vset(key, field, v)
  local n = #v
  while n > 1 and v[n] == 0 do n = n - 1 end  -- trailing zeros cost bytes, carry nothing
  local parts = {}
  for i = 1, n do parts[i] = string.format('%d', v[i]) end
  redis.call('HSET', key, field, table.concat(parts, ','))
end

-- action slots: the N most frequent actions keep their own counters --------------------
-- Slot i: H fields "a<i>" (name) and "n<i>" (all-time count); "A:<name>" -> i.
-- Other actions accumulate in candidates "q:<name>"; a candidate that overtakes the
-- weakest slot takes it, and the weakest slot's day counts move to "other" so sums stay
-- exact.  At most N candidates are kept (the weakest is dropped).
local function migrate_slot_to_other(slot)
  local days = redis.call('HGETALL', D)
  for i = 1, #days, 2 do
    local v = {}
    for x in string.gmatch(days[i + 1], '[^,]+') do v[#v + 1] = tonumber(x) end
    local c = v[3 + slot] or 0
    if c > 0 then
      v[3 + slot] = 0
      v[2] = (v[2] or 0) + c
      vset(D, days[i], v)
    end
  end
end

local function action_slot(action, cnt)
  local s = redis.call('HGET', H, 'A:' .. action)
  if s then
    s = tonumber(s)
    redis.call('HINCRBY', H, 'n' .. s, cnt)
    return s
  end
  local used = num(redis.call('HGET', H, 'na'), 0)
  if used < NA then
    redis.call('HSET', H, 'a' .. used, action, 'n' .. used, cnt, 'A:' .. action, used, 'na', used + 1)
    return used
  end
  local q = redis.call('HINCRBY', H, 'q:' .. action, cnt)
  -- weakest slot (ties: highest index, deterministic)
  local weakest, wc = -1, nil
  for i = 0, NA - 1 do
    local c = num(redis.call('HGET', H, 'n' .. i), 0)
    if wc == nil or c <= wc then weakest, wc = i, c end
  end
  if q > wc then
    local old = redis.call('HGET', H, 'a' .. weakest)
    redis.call('HDEL', H, 'A:' .. old, 'q:' .. action)
    migrate_slot_to_other(weakest)
    redis.call('HSET', H, 'a' .. weakest, action, 'n' .. weakest, q, 'A:' .. action, weakest)
    -- the demoted action becomes a candidate again with its all-time count
    redis.call('HSET', H, 'q:' .. old, wc)
    -- the promoted action's earlier occurrences stay in "other" (already counted there);
    -- this event is counted in its new slot
    return weakest
  end
  -- bound the candidate table
  local all = redis.call('HGETALL', H)
  local cands, minf, minc = 0, nil, nil
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == 'q:' then
      cands = cands + 1
      local c = tonumber(all[i + 1])
      if f ~= 'q:' .. action and (minc == nil or c < minc or (c == minc and before(f, minf))) then
        minf, minc = f, c
      end
    end
  end
  if cands > NA and minf then redis.call('HDEL', H, minf) end
  return -1
end

-- pruning, once per customer per new event-time day ------------------------------------
local function prune(today)
  local horizon = today - MAXW + 1
  local dd = redis.call('HKEYS', D)
  for _, f in ipairs(dd) do
    if tonumber(f) < horizon then redis.call('HDEL', D, f) end
  end
  -- sparse buckets in H; keep the newest MRR point before the horizon (MRR at window start)
  local hk = redis.call('HKEYS', H)
  local best_m, best_md = nil, nil
  for _, f in ipairs(hk) do
    -- '-?': days before 1970 (a hostile or bogus ts is still a late event) must prune too
    local kind, d = string.match(f, '^([tsbm])(-?%d+)$')
    if kind then
      d = tonumber(d)
      if d < horizon then
        if kind == 'm' then
          if best_md == nil or d > best_md then
            if best_m then redis.call('HDEL', H, best_m) end
            best_m, best_md = f, d
          else
            redis.call('HDEL', H, f)
          end
        else
          redis.call('HDEL', H, f)
        end
      end
    end
  end
  local xs = redis.call('HGETALL', X)
  for i = 1, #xs, 2 do
    if tonumber(xs[i + 1]) < horizon then redis.call('HDEL', X, xs[i]) end
  end
  local ek = redis.call('HKEYS', E)
  for _, f in ipairs(ek) do
    if tonumber(string.match(f, '^(-?%d+)')) <= today - DEDUPE then redis.call('HDEL', E, f) end
  end
  seen = nil  -- reload the id set without the pruned days
  local ks = redis.call('HGETALL', K)
  local cutoff = (today - TRET) * DAY
  for i = 1, #ks, 2 do
    local st, _, last = string.match(ks[i + 1], '^(%a),(-?%d+),(-?%d+)')
    if (st == 'r' or st == 'c') and tonumber(last) < cutoff then redis.call('HDEL', K, ks[i]) end
  end
  redis.call('HSET', H, 'pd', today)
end

-- bound distinct users/features: drop the least recently seen ------------------------------
local function bound_x()
  if redis.call('HLEN', X) <= MU then return end
  local xs = redis.call('HGETALL', X)
  local minf, mind = nil, nil
  for i = 1, #xs, 2 do
    local d = tonumber(xs[i + 1])
    if mind == nil or d < mind or (d == mind and before(xs[i], minf)) then minf, mind = xs[i], d end
  end
  redis.call('HDEL', X, minf)
end

local function touch_x(field, day)
  local cur = num(redis.call('HGET', X, field), nil)
  if cur == nil or day > cur then
    redis.call('HSET', X, field, day)
    if cur == nil then bound_x() end
  end
end

-- tickets --------------------------------------------------------------------------------
local function parse_ticket(raw)
  local st, op, last, w = string.match(raw, '^(%a),(-?%d+),(-?%d+),(%d+)$')
  return {st = st, opened = tonumber(op), last = tonumber(last), w = tonumber(w)}
end

local function save_ticket(field, t)
  redis.call('HSET', K, field, string.format('%s,%d,%d,%d', t.st, t.opened, t.last, t.w))
end

local function open_delta(n, w)
  -- as text: a weight of 0 negated is the double -0, which Redis would pass as "-0", and
  -- HINCRBY refuses that ("value is not an integer"), failing the whole batch
  redis.call('HINCRBY', H, 'on', string.format('%d', n))
  redis.call('HINCRBY', H, 'ow', string.format('%d', w))
end

local function bound_open_tickets()
  if num(redis.call('HGET', H, 'on'), 0) <= MOT then return end
  -- drop the oldest open ticket (it no longer counts in the backlog); of equally old ones
  -- the first by field name (not the first in HGETALL order, which changes with the encoding)
  local ks = redis.call('HGETALL', K)
  local minf, mint = nil, nil
  for i = 1, #ks, 2 do
    local t = parse_ticket(ks[i + 1])
    if t.st == 'o' and (mint == nil or t.opened < mint or (t.opened == mint and before(ks[i], minf))) then
      minf, mint = ks[i], t.opened
    end
  end
  if minf then
    local t = parse_ticket(redis.call('HGET', K, minf))
    redis.call('HDEL', K, minf)
    open_delta(-1, -t.w)
  end
end

-- t<day>: opened, resolved, reopened, weighted load opened, ttr sum (s), ttr n, sentiment sum (milli), sentiment n
local function apply_ticket(e, day, in_window)
  local field, status, w, sent = 'k' .. e[6], e[7], e[8], e[9]
  local ts = e[5]
  local raw = redis.call('HGET', K, field)
  local t = raw and parse_ticket(raw) or nil
  local b = in_window and vget(H, 't' .. day, 8) or nil
  local function resolve_into(tk, at)
    local rday = math.floor(at / DAY)
    if tk.opened > 0 and at >= tk.opened then
      local rb = (rday == day and b) or vget(H, 't' .. rday, 8)
      rb[5] = rb[5] + math.floor((at - tk.opened) / 1000)
      rb[6] = rb[6] + 1
      if rb ~= b then vset(H, 't' .. rday, rb) end
    end
  end
  if status == 'opened' then
    if b then b[1] = b[1] + 1; b[4] = b[4] + w end
    if t == nil then
      t = {st = 'o', opened = ts, last = ts, w = w}
      open_delta(1, w)
      save_ticket(field, t)
      bound_open_tickets()
    elseif t.st == 'o' then
      if ts < t.opened then t.opened = ts; save_ticket(field, t) end
    elseif t.opened <= 0 then
      -- resolution arrived before its opening (out of order): the ticket is done
      t.opened = ts
      save_ticket(field, t)
      if t.last >= ts and b then resolve_into(t, t.last) end
    end
  elseif status == 'updated' then
    if t == nil then
      t = {st = 'o', opened = ts, last = ts, w = w}
      open_delta(1, w)
      save_ticket(field, t)
      bound_open_tickets()
    elseif t.st == 'o' and ts >= t.last then
      if w ~= t.w then open_delta(0, w - t.w); t.w = w end
      t.last = ts
      save_ticket(field, t)
    end
  elseif status == 'resolved' or status == 'closed' then
    if t == nil then
      if b and status == 'resolved' then b[2] = b[2] + 1 end
      save_ticket(field, {st = 'r', opened = 0, last = ts, w = w})
    elseif t.st == 'o' then
      if b then b[2] = b[2] + 1 end
      open_delta(-1, -t.w)
      if b then resolve_into(t, ts) end
      t.st = 'r'; t.last = ts
      save_ticket(field, t)
    end
  elseif status == 'reopened' then
    if b then b[3] = b[3] + 1 end
    if t == nil or t.st ~= 'o' then
      t = {st = 'o', opened = ts, last = ts, w = (t and t.w) or w}
      open_delta(1, t.w)
      save_ticket(field, t)
      bound_open_tickets()
    end
  end
  if sent ~= false and sent ~= nil and b then b[7] = b[7] + sent; b[8] = b[8] + 1 end
  if b then vset(H, 't' .. day, b) end
end

-- s<day>: nps n, nps sum, promoters, passives, detractors, csat n, csat sum (milli), csat satisfied, ces n, ces sum (milli)
local function apply_survey(e, day, in_window)
  local survey, score = e[6], e[7]
  local ts = e[5]
  if survey == 'nps' then
    local s = math.floor(score / 1000)
    if ts >= num(redis.call('HGET', H, 'npst'), -1) then
      redis.call('HSET', H, 'npsl', s, 'npst', ts)
    end
    if not in_window then return end
    local b = vget(H, 's' .. day, 10)
    b[1] = b[1] + 1; b[2] = b[2] + s
    if s >= 9 then b[3] = b[3] + 1 elseif s >= 7 then b[4] = b[4] + 1 else b[5] = b[5] + 1 end
    vset(H, 's' .. day, b)
  elseif in_window then
    local b = vget(H, 's' .. day, 10)
    if survey == 'csat' then
      b[6] = b[6] + 1; b[7] = b[7] + score
      if score >= 4000 then b[8] = b[8] + 1 end
    else
      b[9] = b[9] + 1; b[10] = b[10] + score
    end
    vset(H, 's' .. day, b)
  end
end

-- b<day>: started, renewed, upgraded, downgraded, cancelled, reactivated
local SUB_INDEX = {started = 1, renewed = 2, upgraded = 3, downgraded = 4, cancelled = 5, reactivated = 6}
local function apply_subscription(e, day, in_window)
  local status, cents, plan, ts = e[6], e[7], e[8], e[5]
  if ts >= num(redis.call('HGET', H, 'sts'), -1) then
    redis.call('HSET', H, 'st', status, 'sts', ts, 'mrr', cents)
    if plan ~= '' then redis.call('HSET', H, 'plan', plan) end
  end
  if status == 'started' or status == 'reactivated' then
    local st0 = num(redis.call('HGET', H, 'start'), nil)
    if status == 'started' and (st0 == nil or ts < st0) then redis.call('HSET', H, 'start', ts) end
  end
  if status == 'cancelled' then
    if ts >= num(redis.call('HGET', H, 'cts'), -1) then redis.call('HSET', H, 'cts', ts) end
  end
  -- MRR change point of the day: the latest by event time wins. It also says whether the
  -- customer is active after the day (1) or cancelled (0): the point kept before the window
  -- then answers "active at a month start" when that month's buckets are pruned (a
  -- reactivation long ago would otherwise be forgotten behind an older cancellation)
  local mp = redis.call('HGET', H, 'm' .. day)
  local mts = mp and tonumber(string.match(mp, '^(-?%d+),')) or nil
  if mts == nil or ts >= mts then
    redis.call('HSET', H, 'm' .. day, string.format('%d,%d,%d', ts, cents, status == 'cancelled' and 0 or 1))
  end
  if in_window then
    local b = vget(H, 'b' .. day, 6)
    b[SUB_INDEX[status]] = b[SUB_INDEX[status]] + 1
    vset(H, 'b' .. day, b)
  end
end

local function apply_activity(e, day, in_window)
  local action, user, feature, dur, cnt, ts = e[6], e[7], e[8], e[9], e[10], e[5]
  if ts > num(redis.call('HGET', H, 'lact'), -1) then redis.call('HSET', H, 'lact', ts) end
  if not in_window then return end
  local slot = action_slot(action, cnt)
  local v = vget(D, day, 2 + NA)
  v[1] = v[1] + dur
  if slot >= 0 then v[3 + slot] = v[3 + slot] + cnt else v[2] = v[2] + cnt end
  vset(D, day, v)
  if user ~= '' then touch_x('u' .. user, day) end
  if feature ~= '' then touch_x('f' .. feature, day) end
end

local APPLY = {a = apply_activity, t = apply_ticket, s = apply_survey, b = apply_subscription}

-- main loop ---------------------------------------------------------------------------------
local out = {}
for i, e in ipairs(evs) do
  local kind, p, o, id, ts = e[1], e[2], e[3], e[4], e[5]
  if RET > 0 then
    local lts0 = num(redis.call('HGET', H, 'lts'), nil)
    if lts0 and ts - lts0 > RET then
      -- back after the retention period: a new customer, but the offset bookkeeping stays
      -- (a redelivered older record must still be recognised)
      local keep = redis.call('HMGET', H, 'o:a', 'o:t', 'o:s', 'o:b', 'sk')
      redis.call('DEL', H, D, X, K, E, L)
      seen = nil  -- its event ids went with it
      local names = {'o:a', 'o:t', 'o:s', 'o:b', 'sk'}
      for j = 1, 5 do if keep[j] then redis.call('HSET', H, names[j], keep[j]) end end
    end
  end
  local status = 1
  local of = TOPIC_FIELD[kind]
  local prev = redis.call('HGET', H, of)
  if prev then
    local pp, po = string.match(prev, '^(%d+):(%d+)$')
    if tonumber(pp) == p and tonumber(po) >= o then status = 3 end
  end
  if status == 1 then
    redis.call('HSET', H, of, string.format('%d:%d', p, o))
    local day = math.floor(ts / DAY)
    local lts = num(redis.call('HGET', H, 'lts'), nil)
    local newest = (lts and lts > ts) and lts or ts
    local today = math.floor(newest / DAY)
    -- event_id de-duplication: the same id is the same event whatever else it carries
    -- (first wins), so it is looked up among every id kept, not only its own day's; ids
    -- are kept for the horizon, filed by their event's day, in chunks "<day>.<k>" of at
    -- most 7 (56 bytes) so the hash stays a listpack.
    if seen == nil then load_seen() end
    if seen[id] then
      status = 2
    elseif day > today - DEDUPE then
      local k = 0
      local last = nil
      while true do
        local blob = redis.call('HGET', E, day .. '.' .. k)
        if not blob then break end
        last = blob
        k = k + 1
      end
      if last ~= nil and string.len(last) < 56 then
        redis.call('HSET', E, day .. '.' .. (k - 1), last .. id)
      else
        redis.call('HSET', E, day .. '.' .. k, id)
      end
      seen[id] = true
    end
    if status == 1 then
      if lts == nil or ts > lts then redis.call('HSET', H, 'lts', ts) end
      local fs = num(redis.call('HGET', H, 'fs'), nil)
      if fs == nil or ts < fs then redis.call('HSET', H, 'fs', ts) end
      redis.call('HINCRBY', H, 'n', 1)
      if today > num(redis.call('HGET', H, 'pd'), -1) then
        prune(today)
        if RET > 0 then for _, key in ipairs({H, D, X, K, E, L}) do redis.call('PEXPIRE', key, RET) end end
      end
      APPLY[kind](e, day, day > today - MAXW)
    else
      redis.call('HINCRBY', H, 'dup', 1)
    end
  end
  out[i] = status
end
if ARGV[10] == '1' then
  -- the scorer's read, in the same reply: the state this update left (no second round trip,
  -- and no other writer can come in between)
  return {out, redis.call('HGETALL', H), redis.call('HGETALL', D), redis.call('HGETALL', X),
          redis.call('HGETALL', K), redis.call('HLEN', E)}
end
return out
