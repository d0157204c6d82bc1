-- The waits of a queue's due jobs, read in one call (Queue.waiting_since): the earliest
-- scheduled job already due (by Redis's clock, TIME), and the head of each priority in
-- the ready queue (first in, first out within a priority: its head has waited longest),
-- the first ARGV[2] priorities in use. Reads only.
-- A ready job's wait counts from its `ready_since` (epoch ms, Redis's clock): when it
-- last became ready to run, as the scripts that make a job ready set it (enqueue.lua,
-- enqueue_many.lua, write.lua's retry and requeue, lib/settle_dependents.lua).
-- KEYS: 1 queued zset, 2 scheduled zset
-- ARGV: 1 job hash prefix, 2 most priorities to look at,
--       3 a priority's width in the queued zset's scores (make_ready.lua)
-- Returns {Redis's clock (epoch s), due score or false, then for each head: its
-- `ready_since` or false}.
local clock = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(clock[1]), tonumber(clock[2]))
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
local out = {now, due[2] or false}
local scale = tonumber(ARGV[3])
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local heads = 0
while head[1] and heads < tonumber(ARGV[2]) do
  heads = heads + 1
  out[#out + 1] = redis.call('HGET', ARGV[1] .. head[1], 'ready_since')
  local band = math.floor(tonumber(head[2]) / scale)  -- its priority
  head = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', (band + 1) * scale),
    '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
end
return out
