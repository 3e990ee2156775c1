-- reserve: take the oldest pending job into a runner's in-flight list, without blocking.
--
-- The blocking path (an idle runner) uses BLMOVE instead, which cannot run in a
-- script; this one serves the busy path, where it saves the separate "running" write.
--
-- KEYS[1]  sigrun:{q}:pending
-- KEYS[2]  sigrun:{q}:inflight:<runner>
-- KEYS[3]  sigrun:{q}:        the per-queue prefix; the job hash is derived from it
-- ARGV[1]  runner id
-- ARGV[2]  now
-- Returns the payload, or false when the queue is empty.
local payload = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not payload then
  return false
end
local ok, job = pcall(cjson.decode, payload)
if ok and type(job) == 'table' and type(job.id) == 'string' then
  local key = KEYS[3] .. 'job:' .. job.id
  local timeline = (redis.call('HGET', key, 'timeline') or '') .. ' running@' .. ARGV[2]
  redis.call('HSET', key, 'state', 'running', 'runner', ARGV[1], 'started_at', ARGV[2],
             'attempt', tonumber(job.attempt) or 1, 'timeline', timeline)
end
return payload
