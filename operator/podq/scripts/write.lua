-- Write a job back: finish, retry, requeue (a disruption: retry counted apart) or
-- update, in one atomic step.
-- Guarded writes (workers, sweeps) present the attempt id that take.lua gave the run:
-- they land only while the job is still that attempt, in an expected status, so a
-- stale run never writes over a newer attempt, and a resent call (client retry after
-- a lost reply) finds the job moved on and writes nothing. A guarded finish or retry of
-- a job Redis lost (FLUSHALL, restart empty) writes it back: the run's copy is the only.
-- A guarded finish may send only what the run changed (partial): the rest of the hash
-- is as the take left it, since the job is still that attempt. When the job is gone,
-- a partial write returns -1 and the caller sends the whole hash.
-- touched and completed come from Redis TIME: one clock for every host. So does a
-- retry's due time (ARGV[7] seconds from now, or the job's own schedule if later): a
-- delayed retry sets the job's `scheduled` to it and returns it (as text, exact),
-- other writes return 1 when they wrote. A retry or requeue sets the job's
-- `ready_since` (ms) to when it is ready to run again: that due time, else now (what
-- Queue.waiting_since counts from; not the first enqueue).
-- A finish while jobs wait on a limit (KEYS[7] exists: take.lua) wakes the workers: a
-- concurrency slot may have come free. A job parked on a limit that is written back
-- (unguarded: a finish or retry by a client) leaves its parked zset (lib/unpark.lua);
-- one waiting on dependencies leaves the waiting zset and what it waited on.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 active zset, 5 seq counter, 6 stats,
--       7 set of limit names with parked jobs, 8 the set of jobs depending on this
--       one, 9 waiting zset (a finish settles its dependents: docs/dependencies.md)
-- ARGV: 1 key, 2 changes channel, 3 wake channel, 4 mode (finish|retry|requeue|update),
--       5 status, 6 ttl, 7 retry delay (s), 8 the job's own schedule (epoch s),
--       9 the attempt id, 10 expected statuses (comma-separated; '' = unguarded),
--       11 priority, 12 partial ('1': the fields below are only those changed),
--       13 job hash prefix, 14 pending prefix, 15 dependents prefix, 16 parked prefix,
--       17.. field/value pairs to set in the job hash (finish/retry/requeue: the whole
--       hash, podq.queue.store.job_hash, or with partial the changed ones; update:
--       those changed)
local mode = ARGV[4]
-- validate before writing anything: a value EXPIRE or ZADD refuses must not leave a
-- half-applied write (HSET done, EXPIRE failed)
local function out_of_range(name, value, low, high)
  local n = tonumber(value)
  if n == nil or n ~= n or n < low or n > high then
    return redis.error_reply('podq: ' .. name .. ' out of range: ' .. tostring(value))
  end
end
local bad = out_of_range('ttl', ARGV[6], -1e10, 1e10)
  or out_of_range('retry delay', ARGV[7], 0, 1e10)
  or out_of_range('scheduled', ARGV[8], 0, 1e11)
  or out_of_range('priority', ARGV[11], -8000, 8000)
if bad then return bad end
if mode ~= 'finish' and mode ~= 'retry' and mode ~= 'requeue' and mode ~= 'update' then
  return redis.error_reply('podq: unknown write mode ' .. tostring(mode))
end
if ARGV[10] ~= '' then
  local f = redis.call('HMGET', KEYS[1], 'status', 'attempt_id')
  if f[1] then
    if (f[2] or '') ~= ARGV[9] or not string.find(',' .. ARGV[10] .. ',', ',' .. f[1] .. ',', 1, true) then
      return 0
    end
  elseif mode == 'update' then
    return 0
  elseif ARGV[12] == '1' then
    return -1
  end
end
local clock = redis.call('TIME')
local now_s = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local now_ms = string.format('%.0f', math.floor(now_s * 1000))
local status = ARGV[5]
local reply = 1
if mode == 'update' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  redis.call('HSET', KEYS[1], unpack(ARGV, 17))
  redis.call('HSET', KEYS[1], 'touched', now_ms)
  status = redis.call('HGET', KEYS[1], 'status')
  redis.call('SPUBLISH', ARGV[2], status .. ':' .. ARGV[1])
  return 1
end
-- a job is in exactly one of queued/scheduled/active (fix 3), or parked on a limit, or
-- waiting on dependencies: one written back (by a client) waits on them no more
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local waited = redis.call('ZREM', KEYS[9], ARGV[1]) == 1
if waited then redis.call('DEL', ARGV[14] .. ARGV[1]) end
local limited = redis.call('EXISTS', KEYS[7]) == 1  -- some jobs wait on a limit
local was_parked = limited and unpark(KEYS[1], KEYS[7], ARGV[16], ARGV[1])
local ttl = tonumber(ARGV[6])
-- a retry or requeue: when the job is ready to run again (epoch s)
local ready_at = math.max(tonumber(ARGV[8]), now_s + tonumber(ARGV[7]))
if mode == 'finish' and ttl < 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], unpack(ARGV, 17))
  if mode == 'finish' then
    redis.call('HSET', KEYS[1], 'touched', now_ms, 'completed', now_ms)
  else  -- ready again: at once (put back, immediate retry) or when due (ready_at)
    redis.call('HSET', KEYS[1], 'touched', now_ms, 'completed', '0', 'ready_since',
      string.format('%.0f', math.floor(ready_at * 1000)))
  end
  -- the caller's copy said parked: no more (its JSON too, which an absent field would show)
  if was_parked or waited then redis.call('HSET', KEYS[1], 'blocked', '') end
  if mode == 'finish' and ttl > 0 then
    redis.call('EXPIRE', KEYS[1], ttl)
  else
    redis.call('PERSIST', KEYS[1])
  end
end
if mode == 'finish' then
  redis.call('HINCRBY', KEYS[6], status, 1)
  if limited then redis.call('SPUBLISH', ARGV[3], 'queued:') end
  if redis.call('EXISTS', KEYS[8]) == 1 then
    settle_dependents({ARGV[13], ARGV[15], ARGV[14], KEYS[9], KEYS[2], KEYS[5], KEYS[6],
      ARGV[2], ARGV[3]}, ARGV[1], status, now_ms)
  end
else
  if ready_at > now_s then
    local due = string.format('%.17g', ready_at)  -- exact: the score and the field agree
    redis.call('ZADD', KEYS[3], due, ARGV[1])
    if tonumber(ARGV[7]) > 0 then  -- a delayed retry: its next attempt's time
      redis.call('HSET', KEYS[1], 'scheduled', due)
      reply = due
    end
  else
    make_ready(KEYS[2], KEYS[5], ARGV[11], ARGV[1])
  end
  redis.call('HINCRBY', KEYS[6], mode == 'requeue' and 'disrupted' or 'retried', 1)
  redis.call('SPUBLISH', ARGV[3], status .. ':' .. ARGV[1])
end
redis.call('SPUBLISH', ARGV[2], status .. ':' .. ARGV[1])
return reply
