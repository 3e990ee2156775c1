-- enqueue: add a job unless the same job id is still alive (idempotent enqueue).
--
-- KEYS[1]  sigrun:{q}:pending   list, LPUSH here; runners take from the right (FIFO)
-- KEYS[2]  sigrun:{q}:job:<id>  hash, the job's state
-- ARGV[1]  payload (job JSON)
-- ARGV[2]  now (seconds)
-- ARGV[3]  func, copied into the hash so listings need not parse the payload
-- Returns 1 when enqueued, 0 when a job with this id is queued, running or retrying.
local state = redis.call('HGET', KEYS[2], 'state')
if state and state ~= 'succeeded' and state ~= 'failed' and state ~= 'dirty' then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'state', 'queued', 'payload', ARGV[1], 'func', ARGV[3],
           'enqueued_at', ARGV[2], 'attempt', 1, 'timeline', 'queued@' .. ARGV[2])
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
