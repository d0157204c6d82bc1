-- Write a worker's liveness record. It expires after ttl ms on Redis's clock; the
-- workers index is scored by that expiry on the same clock, and pruned here.
-- KEYS: 1 the worker's record, 2 workers zset
-- ARGV: 1 worker id, 2 record JSON, 3 ttl (ms)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return now
