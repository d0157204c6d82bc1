-- Write a job back: finish, retry or update, in one atomic step.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 active zset, 5 seq counter, 6 stats
-- ARGV: 1 key, 2 channel, 3 mode (finish|retry|update), 4 status, 5 ttl (finish),
--       6 ready at (epoch s, retry), 7 now (epoch s), 8 expected attempts ('' = any),
--       9 expected worker id, 10 priority, 11.. field/value pairs
if ARGV[8] ~= '' then
  local f = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'worker_id')
  if (f[1] ~= 'active' and f[1] ~= 'aborting') or f[2] ~= ARGV[8] or f[3] ~= ARGV[9] then
    return 0
  end
end
local mode = ARGV[3]
if mode == 'update' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fields = {}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
local status = ARGV[4]
if mode == 'finish' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  local ttl = tonumber(ARGV[5])
  if ttl < 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], unpack(fields))
    if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
  end
  redis.call('HINCRBY', KEYS[6], status, 1)
elseif mode == 'retry' then
  -- a job is in exactly one of queued/scheduled/active (fix 3)
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('PERSIST', KEYS[1])
  if tonumber(ARGV[6]) > tonumber(ARGV[7]) then
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
  else
    local seq = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[2], string.format('%.0f', tonumber(ARGV[10]) * 1e12 + seq), ARGV[1])
  end
  redis.call('HINCRBY', KEYS[6], 'retried', 1)
else
  redis.call('HSET', KEYS[1], unpack(fields))
  status = redis.call('HGET', KEYS[1], 'status')
end
redis.call('PUBLISH', ARGV[2], status .. ':' .. ARGV[1])
return 1
