-- Enqueue many jobs in one call: the rules of enqueue.lua for each (Redis TIME decides
-- what is due now; a job found queued by this same request counts as enqueued: resent).
-- KEYS: 1 queued zset, 2 scheduled zset, 3 seq counter, 4 stats
-- ARGV: 1 changes channel, 2 request id, 3 job hash prefix, 4 abort marker prefix,
--       5 wake channel, then per job: key, scheduled (epoch s), priority, N, then N values:
--       the job hash as field/value pairs (podq.queue.store.job_hash)
-- Returns {a string with one '1' (enqueued) or '0' (duplicate) per job, now on Redis's
-- clock (epoch s, exact)}: a job's ready_since is now or its schedule, if later (ms).
-- validate every job before writing any (a bad one refuses the call, and the caller
-- can retry the others apart)
local j = 6
while j <= #ARGV do
  local sch, pri, n = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  if sch == nil or sch ~= sch or sch < 0 or sch > 1e11 or pri == nil or pri < -8000
      or pri > 8000 or n == nil or n < 0 or n % 2 ~= 0 or j + 3 + n > #ARGV then
    return redis.error_reply('podq: invalid job ' .. tostring(ARGV[j]) .. ' (scheduled '
      .. tostring(ARGV[j + 1]) .. ', priority ' .. tostring(ARGV[j + 2]) .. ')')
  end
  j = j + 4 + n
end
local out = {}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local job_prefix = ARGV[3]
local abort_prefix = ARGV[4]
local enqueued = 0
local i = 6
while i <= #ARGV do
  local key, sch, pri = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = i + 4
  local last = i + 3 + tonumber(ARGV[i + 3])
  i = last + 1
  local jk = job_prefix .. key
  local ok = '0'
  if redis.call('EXISTS', abort_prefix .. key) == 0 then
    local st = redis.call('HGET', jk, 'status')
    local request = ARGV[2] .. '.' .. first
    if st == 'queued' and redis.call('HGET', jk, 'enqueue_id') == request then
      ok = '1'
    elseif st ~= 'queued' and st ~= 'active' and st ~= 'aborting' then
      if st then redis.call('DEL', jk) end
      redis.call('HSET', jk, unpack(ARGV, first, last))
      -- ready_since: as enqueue.lua's (its schedule if later than now)
      redis.call('HSET', jk, 'enqueue_id', request, 'ready_since',
        string.format('%.0f', math.floor(math.max(now, tonumber(sch)) * 1000)))
      if tonumber(sch) > now then
        redis.call('ZADD', KEYS[2], sch, key)
      else
        make_ready(KEYS[1], KEYS[3], pri, key)
      end
      redis.call('SPUBLISH', ARGV[1], 'queued:' .. key)
      ok = '1'
      enqueued = enqueued + 1
    end
  end
  out[#out + 1] = ok
end
if enqueued > 0 then
  redis.call('HINCRBY', KEYS[4], 'enqueued', enqueued)
  -- one wake-up for the whole batch: workers take as many jobs as they have slots
  redis.call('SPUBLISH', ARGV[5], 'queued:')
end
return {table.concat(out), string.format('%.17g', now)}
