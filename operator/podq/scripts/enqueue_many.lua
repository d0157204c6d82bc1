-- Enqueue many jobs in one call: the rules of enqueue.lua for each.
-- KEYS: 1 queued zset, 2 scheduled zset, 3 seq counter, 4 stats
-- ARGV: 1 (unused), 2 now (epoch s), 3 key prefix ('podq:{q}:'), then 3 values per job:
--       key, job JSON, "scheduled priority attempts timeout heartbeat ttl tdef"
-- Returns a string with one '1' (enqueued) or '0' (duplicate) per job.
local out = {}
local now = tonumber(ARGV[2])
local prefix = ARGV[3]
local enqueued = 0
for i = 4, #ARGV, 3 do
  local key = ARGV[i]
  local jk = prefix .. 'job:' .. key
  local ok = '0'
  if redis.call('EXISTS', prefix .. 'abort:' .. key) == 0 then
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
      redis.call('PUBLISH', prefix .. 'changes', 'queued:' .. key)
      ok = '1'
      enqueued = enqueued + 1
    end
  end
  out[#out + 1] = ok
end
if enqueued > 0 then
  redis.call('HINCRBY', KEYS[4], 'enqueued', enqueued)
  -- one wake-up for the whole batch: workers take as many jobs as they have slots
  redis.call('PUBLISH', prefix .. 'wake', 'queued:')
end
return table.concat(out)
