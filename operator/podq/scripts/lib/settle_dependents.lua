-- settle_dependents(names, key, status, now_ms): a job ended (status complete, failed
-- or aborted): its dependents (docs/dependencies.md) drop it from what they wait on,
-- and those waiting on nothing more become ready; when it did not complete, they end
-- failed (DependencyFailed), and so do theirs, down the whole graph.
-- names: {job prefix, dependents prefix, pending prefix, waiting zset, queued zset, seq,
--         stats, changes channel, wake channel}
-- Prepended (podq.queue.store.load_script) to every script that calls it.
local function settle_dependents(names, key, status, now_ms)
  local stack = {{key, status}}
  while #stack > 0 do
    local top = table.remove(stack)
    local dk = names[2] .. top[1]
    local waiters = redis.call('SMEMBERS', dk)
    redis.call('DEL', dk)
    for _, w in ipairs(waiters) do
      local wk = names[1] .. w
      local f = redis.call('HMGET', wk, 'status', 'priority', 'ttl')
      local pk = names[3] .. w
      -- still waiting on this one: not a job of the same key enqueued again since
      -- (aborted, then enqueued with other dependencies), which waits on others only
      if f[1] == 'queued' and redis.call('ZSCORE', names[4], w)
          and redis.call('SISMEMBER', pk, top[1]) == 1 then
        if top[2] == 'complete' then
          redis.call('SREM', pk, top[1])
          if redis.call('SCARD', pk) == 0 then
            redis.call('ZREM', names[4], w)
            redis.call('HDEL', wk, 'blocked')
            redis.call('HSET', wk, 'ready_since', now_ms)  -- ready from now on
            make_ready(names[5], names[6], f[2] or '0', w)
            redis.call('SPUBLISH', names[8], 'queued:' .. w)
            redis.call('SPUBLISH', names[9], 'queued:' .. w)
          end
        else
          redis.call('ZREM', names[4], w)
          redis.call('DEL', pk)
          redis.call('HDEL', wk, 'blocked')
          redis.call('HSET', wk, 'status', 'failed', 'completed', now_ms, 'touched', now_ms,
            'error', 'DependencyFailed: dependency ' .. top[1] .. ' ended ' .. top[2])
          local ttl = tonumber(f[3] or '600')
          if ttl < 0 then
            redis.call('DEL', wk)
          elseif ttl > 0 then
            redis.call('EXPIRE', wk, ttl)
          end
          redis.call('HINCRBY', names[7], 'failed', 1)
          redis.call('SPUBLISH', names[8], 'failed:' .. w)
          stack[#stack + 1] = {w, 'failed'}
        end
      end
    end
  end
end
