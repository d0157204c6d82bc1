-- Take up to N ready jobs and mark them active in the same atomic step (fix 1).
-- Scheduled jobs that are due are promoted to the ready queue first.
-- A paused queue (KEYS[5] exists: `podq drain`) gives out no job.
-- KEYS: 1 queued zset, 2 scheduled zset, 3 active zset, 4 seq counter, 5 paused flag
-- ARGV: 1 n, 2 now (ms), 3 now (s), 4 worker id, 5 job key prefix, 6 channel,
--       7 worker default timeout ('' = none)
-- Returns {next scheduled score or '', {promoted keys}, key1, {hash1...}, key2, {hash2...}, ...}
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, 1000)
local promoted = {}
for _, k in ipairs(due) do
  redis.call('ZREM', KEYS[2], k)
  local p = redis.call('HGET', ARGV[5] .. k, 'priority')
  if p then
    local seq = redis.call('INCR', KEYS[4])
    redis.call('ZADD', KEYS[1], string.format('%.0f', tonumber(p) * 1e12 + seq), k)
    promoted[#promoted + 1] = k
  end
end
local out = {'', promoted}
local n = tonumber(ARGV[1])
if KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then n = 0 end
local got = 0
while got < n do
  local popped = redis.call('ZPOPMIN', KEYS[1], n - got)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local k = popped[i]
    local jk = ARGV[5] .. k
    if redis.call('HGET', jk, 'status') == 'queued' then
      redis.call('HINCRBY', jk, 'attempts', 1)
      redis.call('HSET', jk, 'status', 'active', 'started', ARGV[2], 'touched', ARGV[2],
        'worker_id', ARGV[4], 'completed', '0')
      if ARGV[7] ~= '' and redis.call('HGET', jk, 'tdef') == '1' then
        redis.call('HSET', jk, 'timeout', ARGV[7])
      end
      redis.call('ZADD', KEYS[3], ARGV[2], k)
      redis.call('PUBLISH', ARGV[6], 'active:' .. k)
      out[#out + 1] = k
      out[#out + 1] = redis.call('HGETALL', jk)
      got = got + 1
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = nxt[2] end
return out
