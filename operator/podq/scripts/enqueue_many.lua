-- Enqueue many jobs in one call: the rules of enqueue.lua for each.
-- KEYS: 1 queued zset, 2 scheduled zset, 3 seq counter, 4 stats
-- ARGV: 1 changes channel, 2 now (epoch s), 3 job hash prefix, 4 abort marker prefix,
--       5 wake channel, then 3 values per job:
--       key, job JSON, "scheduled priority attempts timeout heartbeat ttl tdef"
-- Returns a string with one '1' (enqueued) or '0' (duplicate) per job.
local out = {}
local now = tonumber(ARGV[2])
local job_prefix = ARGV[3]
local abort_prefix = ARGV[4]
local enqueued = 0
for i = 6, #ARGV, 3 do
  local key = ARGV[i]
  local jk = job_prefix .. key
  local ok = '0'
  if redis.call('EXISTS', abort_prefix .. key) == 0 then
    local st = redis.call('HGET', jk, 'status')
    if st ~= 'queued' and st ~= 'active' and st ~= 'aborting' then
      local sch, pri, att, tmo, hb, ttl, tdef = string.match(ARGV[i + 2],
        '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
      if st then redis.call('DEL', jk) end
      redis.call('HSET', jk, 'job', ARGV[i + 1], 'status', 'queued', 'attempts', att,
        'timeout', tmo, 'heartbeat', hb, 'ttl', ttl, 'priority', pri, 'tdef', tdef)
      if tonumber(sch) > now then
        redis.call('ZADD', KEYS[2], sch, key)
      else
        local seq = redis.call('INCR', KEYS[3])
        redis.call('ZADD', KEYS[1], string.format('%.0f', tonumber(pri) * 1e12 + seq), key)
      end
      redis.call('PUBLISH', ARGV[1], 'queued:' .. key)
      ok = '1'
      enqueued = enqueued + 1
    end
  end
  out[#out + 1] = ok
end
if enqueued > 0 then
  redis.call('HINCRBY', KEYS[4], 'enqueued', enqueued)
  -- one wake-up for the whole batch: workers take as many jobs as they have slots
  redis.call('PUBLISH', ARGV[5], 'queued:')
end
return table.concat(out)
