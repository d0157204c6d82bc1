-- The waits of a queue's due jobs, read in one call (Queue.waiting_since): the earliest
-- scheduled job already due, and the head of each priority in the ready queue (first
-- in, first out within a priority: its head has waited longest), the first ARGV[3]
-- priorities in use. Reads only.
-- KEYS: 1 queued zset, 2 scheduled zset
-- ARGV: 1 now (epoch s), 2 job hash prefix, 3 most priorities to look at,
--       4 a priority's width in the queued zset's scores (make_ready.lua)
-- Returns {due score or nil, then for each head: its `queued`, `scheduled` or nil}.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, 1)
local out = {due[2] or false}
local scale = tonumber(ARGV[4])
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local heads = 0
while head[1] and heads < tonumber(ARGV[3]) do
  heads = heads + 1
  local f = redis.call('HMGET', ARGV[2] .. head[1], 'queued', 'scheduled')
  out[#out + 1] = f[1]
  out[#out + 1] = f[2]
  local band = math.floor(tonumber(head[2]) / scale)  -- its priority
  head = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', (band + 1) * scale),
    '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
end
return out
