-- Enqueue one job unless its key is pending (queued, scheduled, active, aborting)
-- or its abort marker lives. A finished job with the same key is replaced.
-- Safe to resend: a job found queued by this same request (a client retry after a lost
-- reply) counts as enqueued. Whether it is due now is decided by Redis TIME, and so
-- is the job's ready_since (Queue.waiting_since counts from it).
-- Returns 0 when not enqueued, else the job's ready_since (epoch ms, as text).
-- A job with dependencies (ARGV[7], docs/dependencies.md) waits in the waiting zset
-- until they all complete (write.lua/abort.lua settle it); one that already failed or
-- was aborted fails it at once (DependencyFailed); an unknown one refuses the call.
-- A job ready at once leaves a token in the ready list (at most one waits there): an
-- idle worker's blocking pop gets it and Redis runs that worker's take right behind it
-- (take_when_ready, podq.queue.redis_take); a job scheduled or waiting on others wakes
-- the workers on the wake channel instead, so they look again at when to take.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 abort marker, 5 seq counter,
--       6 stats, 7 waiting zset, 8 ready list
-- ARGV: 1 key, 2 changes channel, 3 wake channel, 4 scheduled (epoch s), 5 request id,
--       6 priority, 7 the dependencies' job keys, one a line ('' = none), 8 job hash
--       prefix, 9 pending prefix, 10 dependents prefix, 11.. the job hash as
--       field/value pairs (podq.queue.store.job_hash)
local sch, pri = tonumber(ARGV[4]), tonumber(ARGV[6])
if sch == nil or sch ~= sch or sch < 0 or sch > 1e11 or pri == nil or pri < -8000
    or pri > 8000 or (#ARGV - 10) % 2 ~= 0 then
  return redis.error_reply('podq: invalid job ' .. tostring(ARGV[1]) .. ' (scheduled '
    .. tostring(ARGV[4]) .. ', priority ' .. tostring(ARGV[6]) .. ')')
end
local deps = {}
if ARGV[7] ~= '' then
  for dep in string.gmatch(ARGV[7], '[^\n]+') do
    local ds = redis.call('HGET', ARGV[8] .. dep, 'status')
    if dep == ARGV[1] or not ds then
      return redis.error_reply('podq: job ' .. ARGV[1] .. ' depends on '
        .. (dep == ARGV[1] and 'itself' or 'unknown job ' .. dep))
    end
    deps[#deps + 1] = {dep, ds}
  end
end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' and redis.call('HGET', KEYS[1], 'enqueue_id') == ARGV[5] then
  return redis.call('HGET', KEYS[1], 'ready_since') or 1
end
if st == 'queued' or st == 'active' or st == 'aborting' then return 0 end
if st then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
local clock = redis.call('TIME')
local now_s = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
-- ready_since: when it is ready to run (Redis's clock, ms), its schedule if later;
-- one waiting on dependencies gets it again when they are done (settle_dependents)
local ready_since = string.format('%.0f', math.floor(math.max(now_s, sch) * 1000))
redis.call('HSET', KEYS[1], 'enqueue_id', ARGV[5], 'ready_since', ready_since)
local open = 0
local ready = false
for _, d in ipairs(deps) do
  if d[2] == 'failed' or d[2] == 'aborted' then
    local now_ms = string.format('%.0f', clock[1] * 1000 + math.floor(clock[2] / 1000))
    for _, e in ipairs(deps) do redis.call('SREM', ARGV[10] .. e[1], ARGV[1]) end
    redis.call('DEL', ARGV[9] .. ARGV[1])
    redis.call('HSET', KEYS[1], 'status', 'failed', 'completed', now_ms, 'touched', now_ms,
      'error', 'DependencyFailed: dependency ' .. d[1] .. ' ended ' .. d[2])
    local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl') or '600')
    if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
    redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
    redis.call('HINCRBY', KEYS[6], 'failed', 1)
    redis.call('SPUBLISH', ARGV[2], 'failed:' .. ARGV[1])
    return ready_since
  elseif d[2] ~= 'complete' then
    open = open + 1
    redis.call('SADD', ARGV[9] .. ARGV[1], d[1])
    redis.call('SADD', ARGV[10] .. d[1], ARGV[1])
  end
end
if open > 0 then
  redis.call('ZADD', KEYS[7], clock[1], ARGV[1])
  redis.call('HSET', KEYS[1], 'blocked', 'dependencies')
elseif sch > now_s then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  make_ready(KEYS[2], KEYS[5], ARGV[6], ARGV[1])
  ready = true
end
redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
redis.call('SPUBLISH', ARGV[2], 'queued:' .. ARGV[1])
if not ready then
  redis.call('SPUBLISH', ARGV[3], 'queued:' .. ARGV[1])
elseif redis.call('LLEN', KEYS[8]) == 0 then
  redis.call('RPUSH', KEYS[8], '1')
end
return ready_since
