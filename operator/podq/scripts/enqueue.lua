-- Enqueue one job unless its key is pending (queued, scheduled, active, aborting)
-- or its abort marker lives. A finished job with the same key is replaced.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 abort marker, 5 seq counter, 6 stats
-- ARGV: 1 key, 2 key prefix ('podq:{q}:'), 3 scheduled (epoch s), 4 now (epoch s), 5 priority, 6 job JSON,
--       7 attempts, 8 timeout, 9 heartbeat, 10 ttl, 11 tdef ('1' = timeout not chosen)
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' or st == 'active' or st == 'aborting' then return 0 end
if st then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'job', ARGV[6], 'status', 'queued', 'attempts', ARGV[7],
  'timeout', ARGV[8], 'heartbeat', ARGV[9], 'ttl', ARGV[10], 'priority', ARGV[5],
  'tdef', ARGV[11])
if tonumber(ARGV[3]) > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
else
  local seq = redis.call('INCR', KEYS[5])
  redis.call('ZADD', KEYS[2], string.format('%.0f', tonumber(ARGV[5]) * 1e12 + seq), ARGV[1])
end
redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
redis.call('PUBLISH', ARGV[2] .. 'changes', 'queued:' .. ARGV[1])
redis.call('PUBLISH', ARGV[2] .. 'wake', 'queued:' .. ARGV[1])
return 1
