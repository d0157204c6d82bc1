-- unpark(job hash, limited set, parked prefix, job key): a job parked on a limit
-- (take.lua: its `blocked` is concurrency or rate) that leaves the queued state some
-- other way (aborted, written back) leaves its limit's parked zset in the same atomic
-- step, and the limit's name the limited set when no other job waits on it, so the
-- counts of jobs waiting on limits are right at once. Returns whether it was parked.
-- Prepended (podq.queue.store.load_script) to every script that calls it.
local function unpark(job, limited, parked, key)
  local f = redis.call('HMGET', job, 'blocked', 'function')
  if (f[1] ~= 'concurrency' and f[1] ~= 'rate') or not f[2] then return false end
  redis.call('HDEL', job, 'blocked')
  local pk = parked .. f[2]
  if redis.call('ZREM', pk, key) == 1 and redis.call('EXISTS', pk) == 0 then
    redis.call('SREM', limited, f[2])
  end
  return true
end
