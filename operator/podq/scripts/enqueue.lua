-- Enqueue one job unless its key is pending (queued, scheduled, active, aborting)
-- or its abort marker lives. A finished job with the same key is replaced.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 abort marker, 5 seq counter, 6 stats
-- ARGV: 1 key, 2 channel, 3 scheduled (epoch s), 4 now (epoch s), 5 priority,
--       6.. field/value pairs for the job hash
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' or st == 'active' or st == 'aborting' then return 0 end
redis.call('DEL', KEYS[1])
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if tonumber(ARGV[3]) > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
else
  local seq = redis.call('INCR', KEYS[5])
  redis.call('ZADD', KEYS[2], string.format('%.0f', tonumber(ARGV[5]) * 1e12 + seq), ARGV[1])
end
redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
redis.call('PUBLISH', ARGV[2], 'queued:' .. ARGV[1])
return 1
