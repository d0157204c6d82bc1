-- Write a job back: finish, retry or update, in one atomic step.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 active zset, 5 seq counter, 6 stats
-- ARGV: 1 key, 2 changes channel, 3 wake channel, 4 mode (finish|retry|update), 5 status,
--       6 ttl, 7 ready at (epoch s, retry), 8 now (epoch s), 9 expected attempts ('' = any),
--       10 expected worker id, 11 priority, 12.. field/value pairs to set in the job hash
--       (finish/retry: the whole hash, podq.queue.store.job_hash; update: those changed)
if ARGV[9] ~= '' then
  local f = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'worker_id')
  if (f[1] ~= 'active' and f[1] ~= 'aborting') or f[2] ~= ARGV[9] or f[3] ~= ARGV[10] then
    return 0
  end
end
local mode = ARGV[4]
local status = ARGV[5]
if mode == 'update' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  redis.call('HSET', KEYS[1], unpack(ARGV, 12))
  status = redis.call('HGET', KEYS[1], 'status')
  redis.call('PUBLISH', ARGV[2], status .. ':' .. ARGV[1])
  return 1
end
-- a job is in exactly one of queued/scheduled/active (fix 3)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local ttl = tonumber(ARGV[6])
if mode == 'finish' and ttl < 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], unpack(ARGV, 12))
  if mode == 'finish' and ttl > 0 then
    redis.call('EXPIRE', KEYS[1], ttl)
  else
    redis.call('PERSIST', KEYS[1])
  end
end
if mode == 'finish' then
  redis.call('HINCRBY', KEYS[6], status, 1)
else
  if tonumber(ARGV[7]) > tonumber(ARGV[8]) then
    redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
  else
    local seq = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[2], string.format('%.0f', tonumber(ARGV[11]) * 1e12 + seq), ARGV[1])
  end
  redis.call('HINCRBY', KEYS[6], 'retried', 1)
  redis.call('PUBLISH', ARGV[3], status .. ':' .. ARGV[1])
end
redis.call('PUBLISH', ARGV[2], status .. ':' .. ARGV[1])
return 1
