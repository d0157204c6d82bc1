-- Find active jobs to recover: the job hash is gone, its worker's liveness record
-- has expired (fix 6), its status is not active/aborting, or it is stuck.
-- KEYS: 1 active zset, 2 sweep lock
-- ARGV: 1 job hash prefix, 2 worker record prefix, 3 now (ms), 4 lock ttl (ms),
--       5 stuck grace (ms)
-- Returns {key1, reason1, key2, reason2, ...}
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) == false then return {} end
local out = {}
local alive = {}
local now = tonumber(ARGV[3])
local grace = tonumber(ARGV[5])
for _, k in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. k,
    'status', 'worker_id', 'started', 'touched', 'timeout', 'heartbeat')
  local reason = nil
  if not f[1] then
    reason = 'missing'
  elseif f[1] ~= 'active' and f[1] ~= 'aborting' then
    reason = 'status'
  else
    local wid = f[2] or ''
    local live = alive[wid]
    if live == nil then
      live = wid ~= '' and redis.call('EXISTS', ARGV[2] .. wid) == 1
      alive[wid] = live
    end
    local timeout = tonumber(f[5] or '0')
    local heartbeat = tonumber(f[6] or '0')
    if not live then
      reason = 'dead'
    elseif timeout > 0 and now - tonumber(f[3] or '0') > timeout * 1000 + grace then
      reason = 'timeout'
    elseif heartbeat > 0 and now - tonumber(f[4] or '0') > heartbeat * 1000 then
      reason = 'heartbeat'
    end
  end
  if reason then
    out[#out + 1] = k
    out[#out + 1] = reason
  end
end
return out
