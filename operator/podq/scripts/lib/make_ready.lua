-- make_ready(queued zset, seq counter, priority, job key): put a job in the ready
-- queue, ordered by priority (lower first), then first in, first out within a
-- priority. The score is priority * 1e12 + a counter: priorities are within
-- +-PRIORITY_LIMIT (podq.queue.base), so scores stay exact in a double.
-- Prepended (podq.queue.store.load_script) to every script that calls it.
local function make_ready(queued, seq, priority, key)
  local n = redis.call('INCR', seq)
  redis.call('ZADD', queued, string.format('%.0f', tonumber(priority) * 1e12 + n), key)
end
