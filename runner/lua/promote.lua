-- promote: move retries whose backoff has passed from the delayed set to the queue.
--
-- KEYS[1]  sigrun:{q}:delayed
-- KEYS[2]  sigrun:{q}:   per-queue prefix (pending, job:<id>)
-- ARGV[1]  now
-- ARGV[2]  at most this many per call
-- Returns how many were moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, payload in ipairs(due) do
  redis.call('ZREM', KEYS[1], payload)
  redis.call('LPUSH', KEYS[2] .. 'pending', payload)
  local ok, job = pcall(cjson.decode, payload)
  if ok and type(job) == 'table' and type(job.id) == 'string' then
    local key = KEYS[2] .. 'job:' .. job.id
    local timeline = (redis.call('HGET', key, 'timeline') or '') .. ' queued@' .. ARGV[1]
    redis.call('HSET', key, 'state', 'queued', 'timeline', timeline)
  end
end
return #due
