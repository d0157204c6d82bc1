-- Take up to N ready jobs and mark them active in the same atomic step (fix 1).
-- Scheduled jobs that are due are promoted to the ready queue first.
-- A paused queue (KEYS[5] exists: `podq drain`) gives out no job.
-- Times come from Redis TIME: one clock for every host (liveness, heartbeat, timeout).
-- Each taken job gets an attempt id, `<request id>.<n>`, that every later write-back
-- of this attempt must present (write.lua), so a stale run never writes a newer one.
-- Safe to resend: a call whose request id already took jobs (a client retry after a
-- lost reply) returns those jobs again instead of taking more. The record of the
-- taker's previous request, whose reply it got, is dropped.
-- KEYS: 1 queued zset, 2 scheduled zset, 3 active zset, 4 seq counter, 5 paused flag,
--       6 this request's record, 7 the previous request's record (or KEYS[6])
-- ARGV: 1 n, 2 request id, 3 worker id, 4 job key prefix, 5 channel,
--       6 worker default timeout ('' = none), 7 lease (ms the worker's liveness record
--       may be missing after the take before its jobs count as orphaned; sweep.lua),
--       8.. the job hash fields to return (podq.queue.store.TAKE_FIELDS)
-- Returns {next scheduled score or '', {promoted keys}, key1, {values1...}, key2,
--          {values2...}, ...}: each job's values of those fields, in their order
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
      out[#out + 1] = redis.call('HMGET', jk, unpack(ARGV, 8))
    end
  end
  return out
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
local got = 0
while got < n do
  local popped = redis.call('ZPOPMIN', KEYS[1], n - got)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local k = popped[i]
    local jk = ARGV[4] .. k
    if redis.call('HGET', jk, 'status') == 'queued' then
      got = got + 1
      redis.call('HINCRBY', jk, 'attempts', 1)
      redis.call('HSET', jk, 'status', 'active', 'started', now_ms, 'touched', now_ms,
        'worker_id', ARGV[3], 'completed', '0', 'attempt_id', ARGV[2] .. '.' .. got,
        'lease', ARGV[7])
      if ARGV[6] ~= '' and redis.call('HGET', jk, 'tdef') == '1' then
        redis.call('HSET', jk, 'timeout', ARGV[6])
      end
      redis.call('ZADD', KEYS[3], now_ms, k)
      redis.call('RPUSH', KEYS[6], k)
      redis.call('PUBLISH', ARGV[5], 'active:' .. k)
      out[#out + 1] = k
      out[#out + 1] = redis.call('HMGET', jk, unpack(ARGV, 8))
    end
  end
end
-- kept for an hour at most: a taker that died never drops it
if got > 0 then redis.call('PEXPIRE', KEYS[6], 3600000) end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = nxt[2] end
return out
