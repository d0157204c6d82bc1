-- Abort a job: a queued or scheduled one is finished as aborted at once (fix 2), an
-- active one becomes aborting (its worker cancels it). The abort marker lives in the
-- queue's own key space (fix 4).
-- A job aborted before it ran settles its dependents (docs/dependencies.md): they fail.
-- One parked on a limit (take.lua) leaves its parked zset at once (docs/limits.md).
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 abort marker, 5 stats,
--       6 seq counter, 7 the set of jobs depending on this one, 8 waiting zset,
--       9 set of limit names with parked jobs
-- ARGV: 1 key, 2 changes channel, 3 wake channel, 4 error, 5 marker ttl (ms),
--       6 job hash prefix, 7 pending prefix, 8 dependents prefix, 9 parked prefix
local f = redis.call('HMGET', KEYS[1], 'status', 'ttl')
local st = f[1]
if not st then return false end
if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5]) end
if st == 'queued' or st == 'new' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[8], ARGV[1])
  redis.call('DEL', ARGV[7] .. ARGV[1])
  if redis.call('EXISTS', KEYS[9]) == 1 then unpark(KEYS[1], KEYS[9], ARGV[9], ARGV[1]) end
  redis.call('HDEL', KEYS[1], 'blocked')  -- waiting on dependencies: no more
  local clock = redis.call('TIME')  -- one clock for every host
  local now_ms = string.format('%.0f', clock[1] * 1000 + math.floor(clock[2] / 1000))
  redis.call('HSET', KEYS[1], 'status', 'aborted', 'error', ARGV[4], 'completed', now_ms)
  local ttl = tonumber(f[2] or '600')
  if ttl < 0 then
    redis.call('DEL', KEYS[1])
  elseif ttl > 0 then
    redis.call('EXPIRE', KEYS[1], ttl)
  end
  redis.call('HINCRBY', KEYS[5], 'aborted', 1)
  redis.call('SPUBLISH', ARGV[2], 'aborted:' .. ARGV[1])
  if redis.call('EXISTS', KEYS[7]) == 1 then
    settle_dependents({ARGV[6], ARGV[8], ARGV[7], KEYS[8], KEYS[2], KEYS[6], KEYS[5],
      ARGV[2], ARGV[3]}, ARGV[1], 'aborted', now_ms)
  end
  return 'aborted'
elseif st == 'active' then
  redis.call('HSET', KEYS[1], 'status', 'aborting', 'error', ARGV[4])
  redis.call('SPUBLISH', ARGV[2], 'aborting:' .. ARGV[1])
  redis.call('SPUBLISH', ARGV[3], 'aborting:' .. ARGV[1])
  return 'aborting'
end
return st
