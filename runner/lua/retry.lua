-- retry: send a job that ended failed or dirty back to the queue, by hand.
--
-- KEYS[1]  sigrun:{q}:job:<id>
-- KEYS[2]  sigrun:{q}:failed
-- KEYS[3]  sigrun:{q}:pending
-- ARGV[1]  job id
-- ARGV[2]  fresh payload (attempt 1)
-- ARGV[3]  now
-- Returns 1 when requeued, 0 when the job is not in a final failed or dirty state.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'failed' and state ~= 'dirty' then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PERSIST', KEYS[1])
local timeline = (redis.call('HGET', KEYS[1], 'timeline') or '') .. ' queued@' .. ARGV[3]
redis.call('HSET', KEYS[1], 'state', 'queued', 'payload', ARGV[2], 'enqueued_at', ARGV[3],
           'attempt', 1, 'timeline', timeline)
redis.call('LPUSH', KEYS[3], ARGV[2])
return 1
