-- Find active jobs to recover: the job hash is gone, its status is not active/aborting,
-- its worker's liveness record has expired (fix 6), or it is stuck.
-- One clock, Redis TIME, for every comparison: hosts' clocks may disagree.
-- A job counts as orphaned only once its lease (the taking worker's liveness ttl) has
-- passed since it was taken, and since Redis started: after Redis lost the liveness
-- records (FLUSHALL, restart empty) or they expired while it was down (restart from its
-- data file), live workers write theirs again within that time. A job taken with no
-- worker id (plain Queue.dequeue) has no liveness record: only timeout and heartbeat
-- apply.
-- Stuck rules apply to active jobs (an aborting one was already asked to stop), and to
-- aborting ones without a worker to ask.
-- KEYS: 1 active zset, 2 sweep lock
-- A sweep that Redis runs later than its sender expected (ARGV[5], on Redis's clock:
-- Redis was frozen or unreachable meanwhile, and live workers' records expired as it
-- waited) takes no worker for dead: they write their records again first.
-- ARGV: 1 job hash prefix, 2 worker record prefix, 3 lock ttl (ms), 4 stuck grace (ms),
--       5 run by (epoch ms, Redis's clock; '' = any time)
-- Returns {key1, reason1, key2, reason2, ...}
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) == false then return {} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local grace = tonumber(ARGV[4])
local late = (ARGV[5] or '') ~= '' and now > tonumber(ARGV[5])
local up_ms = 1000 * tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)'))
local out = {}
local alive = {}
for _, k in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. k,
    'status', 'worker_id', 'started', 'touched', 'timeout', 'heartbeat', 'lease')
  local reason = nil
  if not f[1] then
    reason = 'missing'
  elseif f[1] ~= 'active' and f[1] ~= 'aborting' then
    reason = 'status'
  else
    local wid = f[2] or ''
    local started = tonumber(f[3] or '0')
    local ask = f[1] == 'active' or wid == ''
    if wid ~= '' then
      local live = alive[wid]
      if live == nil then
        live = redis.call('EXISTS', ARGV[2] .. wid) == 1
        alive[wid] = live
      end
      if not live then
        ask = false
        local lease = tonumber(f[7] or '0')
        if now - started > lease and up_ms >= lease and not late then reason = 'dead' end
      end
    end
    local timeout = tonumber(f[5] or '0')
    local heartbeat = tonumber(f[6] or '0')
    if ask and timeout > 0 and now - started > timeout * 1000 + grace then
      reason = 'timeout'
    elseif ask and heartbeat > 0 and now - tonumber(f[4] or '0') > heartbeat * 1000 then
      reason = 'heartbeat'
    end
  end
  if reason then
    out[#out + 1] = k
    out[#out + 1] = reason
  end
end
return out
