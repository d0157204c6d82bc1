-- Take up to N ready jobs and mark them active in the same atomic step (fix 1).
-- Scheduled jobs that are due are promoted to the ready queue first.
-- A paused queue (KEYS[5] exists: `podq drain`) gives out no job.
-- Times come from Redis TIME: one clock for every host (liveness, heartbeat, timeout).
-- Each taken job gets an attempt id, `<request id>.<n>`, that every later write-back
-- of this attempt must present (write.lua), so a stale run never writes a newer one.
-- Safe to resend: a call whose request id already took jobs (a client retry after a
-- lost reply) returns those jobs again instead of taking more. The record of the
-- taker's previous request, whose reply it got, is dropped. A request naming its
-- previous one is a worker's: KEYS[11] holds the record key of the worker's last such
-- request run, and a late copy of an older one (sent again on another connection while
-- Redis was frozen or unreachable, and run after the worker had its reply and moved
-- on) takes nothing: its jobs would be active for a worker that never sees them.
-- Flow control (docs/limits.md): with limits set (KEYS[8]), a ready job whose function's
-- limit has no room is parked (moved to its limit's parked zset, keeping its score);
-- parked jobs go back to the ready queue as room comes. The queue's own limit ('*')
-- caps how many this take gives out. A concurrency slot is held while the run that
-- took it is active: slots of ended runs (finished, swept) are dropped when counted.
-- A rate limit (GCRA on Redis TIME) is spent by each job taken under it; the reply's
-- next time is also when a rate limit that held jobs back, or whose last start this
-- take used while jobs are left, has room again.
-- KEYS: 1 queued zset, 2 scheduled zset, 3 active zset, 4 seq counter, 5 paused flag,
--       6 this request's record, 7 the previous request's record (or KEYS[6]),
--       8 limits hash, 9 set of limit names with parked jobs, 10 ready list (tokens:
--       enqueue.lua), 11 the worker's last request (its record key; a string)
-- ARGV: 1 n, 2 request id, 3 worker id, 4 job key prefix, 5 channel,
--       6 worker default timeout ('' = none), 7 lease (ms the worker's liveness record
--       may be missing after the take before its jobs count as orphaned; sweep.lua),
--       8 slots key prefix, 9 parked key prefix, 10 rate key prefix,
--       11.. the job hash fields to return (podq.queue.store.TAKE_FIELDS)
-- Returns {next scheduled score, or when a rate limit has room again, or '',
--          {promoted keys}, key1, {values1...}, key2, {values2...}, ...}: each job's values of those fields, in their order
local clock = redis.call('TIME')
local now_s = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local now_ms = string.format('%.0f', math.floor(now_s * 1000))
local out = {'', {}}
if KEYS[7] ~= KEYS[6] then redis.call('DEL', KEYS[7]) end
local taken = redis.call('LRANGE', KEYS[6], 0, -1)
if #taken > 0 then
  for i, k in ipairs(taken) do
    local jk = ARGV[4] .. k
    local f = redis.call('HMGET', jk, 'status', 'attempt_id')
    if (f[1] == 'active' or f[1] == 'aborting') and f[2] == ARGV[2] .. '.' .. i then
      out[#out + 1] = k
      out[#out + 1] = redis.call('HMGET', jk, unpack(ARGV, 11))
    end
  end
  return out
end
if KEYS[7] ~= KEYS[6] then
  local last = redis.call('GET', KEYS[11])
  if last and last ~= KEYS[6] and last ~= KEYS[7] then return out end
  redis.call('SET', KEYS[11], KEYS[6], 'PX', 3600000)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_s, 'LIMIT', 0, 1000)
local promoted = out[2]
for _, k in ipairs(due) do
  redis.call('ZREM', KEYS[2], k)
  local p = redis.call('HGET', ARGV[4] .. k, 'priority')
  if p then
    make_ready(KEYS[1], KEYS[4], p, k)
    promoted[#promoted + 1] = k
  end
end
local n = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[5]) == 1 then n = 0 end
local limits = nil
-- limits set, or jobs still parked on limits since removed (set_limits({}): the hash
-- is gone, its parked jobs go back below): one EXISTS either way
if redis.call('EXISTS', KEYS[8], KEYS[9]) > 0 then
  limits = {}
  local raw = redis.call('HGETALL', KEYS[8])
  for i = 1, #raw, 2 do
    local c, r, p, b = string.match(raw[i + 1], '^(%d*),(%d*),(%d*),(%d*)$')
    limits[raw[i]] = {tonumber(c), tonumber(r), tonumber(p), tonumber(b) or 1}
  end
end
-- slots in use under a function's concurrency limit; at the cap, those of runs no
-- longer active as the attempt that took them are dropped first. Counted once a take.
local used_slots = {}
local function in_use(name, cap)
  if used_slots[name] then return used_slots[name] end
  local sk = ARGV[8] .. name
  local used = redis.call('HLEN', sk)
  if used >= cap then
    local held = redis.call('HGETALL', sk)
    for i = 1, #held, 2 do
      local f = redis.call('HMGET', ARGV[4] .. held[i], 'status', 'attempt_id')
      if not ((f[1] == 'active' or f[1] == 'aborting') and f[2] == held[i + 1]) then
        redis.call('HDEL', sk, held[i])
        used = used - 1
      end
    end
  end
  used_slots[name] = used
  return used
end
-- a rate limit is a GCRA on Redis TIME: starts spaced per/rate ms apart, `burst` of
-- them at once after an idle spell; its key holds the theoretical arrival time (ms)
local now_f = now_s * 1000
local wake_at = nil  -- epoch ms at which a rate limit with no room has room again
local tats = {}  -- name -> arrival time: read once a take, written back at its end
local function arrival(name)
  local tat = tats[name]
  if not tat then
    tat = tonumber(redis.call('GET', ARGV[10] .. name) or '0')
    tats[name] = tat
  end
  if tat < now_f then return now_f end
  return tat
end
local function tokens(name, lim)
  local gap = lim[3] / lim[2]
  local tat = arrival(name)
  local k = math.floor((now_f + (lim[4] - 1) * gap - tat) / gap + 1e-6) + 1
  if k <= 0 then
    local at = tat - (lim[4] - 1) * gap
    if not wake_at or at < wake_at then wake_at = at end
  end
  return k
end
local spent = {}
local function spend(name, lim)
  if not lim[2] then return end
  tats[name] = arrival(name) + lim[3] / lim[2]
  spent[name] = true
end
-- how many more jobs a limit lets start now (at most n)
local function room(name, lim)
  local r = n
  if lim[1] then
    local used
    if name == '*' then used = redis.call('ZCARD', KEYS[3]) else used = in_use(name, lim[1]) end
    r = math.min(r, lim[1] - used)
  end
  if lim[2] and r > 0 then r = math.min(r, tokens(name, lim)) end
  return math.max(r, 0)
end
if limits then
  if limits['*'] then n = room('*', limits['*']) end
  for _, name in ipairs(redis.call('SMEMBERS', KEYS[9])) do
    local pk = ARGV[9] .. name
    local back = 1000  -- the limit was removed: all go back, a thousand a take
    if limits[name] then back = room(name, limits[name]) end
    if back > 0 then
      local moved = redis.call('ZPOPMIN', pk, back)
      for i = 1, #moved, 2 do
        redis.call('ZADD', KEYS[1], moved[i + 1], moved[i])
        redis.call('HDEL', ARGV[4] .. moved[i], 'blocked')
      end
    end
    if redis.call('EXISTS', pk) == 0 then redis.call('SREM', KEYS[9], name) end
  end
end
local got = 0
while got < n do
  local popped = redis.call('ZPOPMIN', KEYS[1], n - got)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local k = popped[i]
    local jk = ARGV[4] .. k
    local lim, fn = nil, nil
    if limits then
      fn = redis.call('HGET', jk, 'function')
      lim = fn and fn ~= '*' and limits[fn]
      if lim and room(fn, lim) == 0 then
        local why = 'rate'
        if lim[1] and used_slots[fn] >= lim[1] then why = 'concurrency' end
        redis.call('HSET', jk, 'blocked', why)  -- shown: podq.operator.status
        redis.call('ZADD', ARGV[9] .. fn, popped[i + 1], k)
        redis.call('SADD', KEYS[9], fn)
        lim = false
        k = nil
      end
    end
    if k and redis.call('HGET', jk, 'status') == 'queued' then
      got = got + 1
      if lim then
        if lim[1] then
          redis.call('HSET', ARGV[8] .. fn, k, ARGV[2] .. '.' .. got)
          used_slots[fn] = used_slots[fn] + 1
        end
        spend(fn, lim)
      end
      if limits and limits['*'] then spend('*', limits['*']) end
      redis.call('HINCRBY', jk, 'attempts', 1)
      redis.call('HSET', jk, 'status', 'active', 'started', now_ms, 'touched', now_ms,
        'worker_id', ARGV[3], 'completed', '0', 'attempt_id', ARGV[2] .. '.' .. got,
        'lease', ARGV[7])
      if ARGV[6] ~= '' and redis.call('HGET', jk, 'tdef') == '1' then
        redis.call('HSET', jk, 'timeout', ARGV[6])
      end
      redis.call('ZADD', KEYS[3], now_ms, k)
      redis.call('RPUSH', KEYS[6], k)
      redis.call('SPUBLISH', ARGV[5], 'active:' .. k)
      out[#out + 1] = k
      out[#out + 1] = redis.call('HMGET', jk, unpack(ARGV, 11))
    end
  end
end
for name in pairs(spent) do
  local tat = tats[name]
  redis.call('SET', ARGV[10] .. name, string.format('%.3f', tat),
    'PX', math.max(1, math.ceil(tat - now_f)))
end
-- a rate limit whose last start this take used, while jobs are left (ready, or parked
-- on it): its time to have room again is the next time too (tokens() records it), so
-- idle workers wait until then rather than until their next poll
local full = got > 0 and got >= tonumber(ARGV[1])
local left = (next(spent) or full) and redis.call('ZCARD', KEYS[1]) > 0  -- read once
for name in pairs(spent) do
  if left or redis.call('SISMEMBER', KEYS[9], name) == 1 then tokens(name, limits[name]) end
end
-- ready jobs left by a take that got all it asked for: a token for another idle
-- worker (podq.queue.redis_take.take_when_ready), as enqueue.lua leaves for a new job
if full and left and redis.call('LLEN', KEYS[10]) == 0 then
  redis.call('RPUSH', KEYS[10], '1')
end
-- kept for an hour at most: a taker that died never drops it
if got > 0 then redis.call('PEXPIRE', KEYS[6], 3600000) end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = nxt[2] end
if wake_at and (out[1] == '' or wake_at / 1000 < tonumber(out[1])) then
  out[1] = string.format('%.3f', wake_at / 1000)  -- a rate limit has room again then
end
return out
