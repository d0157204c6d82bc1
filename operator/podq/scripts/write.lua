-- Write a job back: finish, retry or update, in one atomic step.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 active zset, 5 seq counter, 6 stats
-- ARGV: 1 key, 2 key prefix ('podq:{q}:'), 3 mode (finish|retry|update), 4 status, 5 ttl,
--       6 ready at (epoch s, retry), 7 now (epoch s), 8 expected attempts ('' = any),
--       9 expected worker id, 10 priority,
--       finish/retry: 11 job JSON, 12 attempts, 13 started, 14 touched, 15 completed,
--                     16 worker id, 17 error, 18 timeout, 19 heartbeat
--       update: 11.. field/value pairs
if ARGV[8] ~= '' then
  local f = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'worker_id')
  if (f[1] ~= 'active' and f[1] ~= 'aborting') or f[2] ~= ARGV[8] or f[3] ~= ARGV[9] then
    return 0
  end
end
local mode = ARGV[3]
local status = ARGV[4]
if mode == 'update' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  local fields = {}
  for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], unpack(fields))
  status = redis.call('HGET', KEYS[1], 'status')
  redis.call('PUBLISH', ARGV[2] .. 'changes', status .. ':' .. ARGV[1])
  return 1
end
-- a job is in exactly one of queued/scheduled/active (fix 3)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local ttl = tonumber(ARGV[5])
if mode == 'finish' and ttl < 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'job', ARGV[11], 'status', status, 'attempts', ARGV[12],
    'started', ARGV[13], 'touched', ARGV[14], 'completed', ARGV[15], 'worker_id', ARGV[16],
    'error', ARGV[17], 'timeout', ARGV[18], 'heartbeat', ARGV[19], 'priority', ARGV[10],
    'ttl', ARGV[5])
  if mode == 'finish' and ttl > 0 then
    redis.call('EXPIRE', KEYS[1], ttl)
  else
    redis.call('PERSIST', KEYS[1])
  end
end
if mode == 'finish' then
  redis.call('HINCRBY', KEYS[6], status, 1)
else
  if tonumber(ARGV[6]) > tonumber(ARGV[7]) then
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
  else
    local seq = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[2], string.format('%.0f', tonumber(ARGV[10]) * 1e12 + seq), ARGV[1])
  end
  redis.call('HINCRBY', KEYS[6], 'retried', 1)
  redis.call('PUBLISH', ARGV[2] .. 'wake', status .. ':' .. ARGV[1])
end
redis.call('PUBLISH', ARGV[2] .. 'changes', status .. ':' .. ARGV[1])
return 1
