-- Enqueue one job unless its key is pending (queued, scheduled, active, aborting)
-- or its abort marker lives. A finished job with the same key is replaced.
-- Safe to resend: a job found queued by this same request (a client retry after a lost
-- reply) counts as enqueued. Whether it is due now is decided by Redis TIME.
-- KEYS: 1 job hash, 2 queued zset, 3 scheduled zset, 4 abort marker, 5 seq counter, 6 stats
-- ARGV: 1 key, 2 changes channel, 3 wake channel, 4 scheduled (epoch s), 5 request id,
--       6 priority, 7.. the job hash as field/value pairs (podq.queue.store.job_hash)
local sch, pri = tonumber(ARGV[4]), tonumber(ARGV[6])
if sch == nil or sch ~= sch or sch < 0 or sch > 1e11 or pri == nil or pri < -8000
    or pri > 8000 or (#ARGV - 6) % 2 ~= 0 then
  return redis.error_reply('podq: invalid job ' .. tostring(ARGV[1]) .. ' (scheduled '
    .. tostring(ARGV[4]) .. ', priority ' .. tostring(ARGV[6]) .. ')')
end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' and redis.call('HGET', KEYS[1], 'enqueue_id') == ARGV[5] then return 1 end
if st == 'queued' or st == 'active' or st == 'aborting' then return 0 end
if st then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('HSET', KEYS[1], 'enqueue_id', ARGV[5])
local clock = redis.call('TIME')
if tonumber(ARGV[4]) > tonumber(clock[1]) + tonumber(clock[2]) / 1e6 then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  make_ready(KEYS[2], KEYS[5], ARGV[6], ARGV[1])
end
redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
redis.call('PUBLISH', ARGV[2], 'queued:' .. ARGV[1])
redis.call('PUBLISH', ARGV[3], 'queued:' .. ARGV[1])
return 1
