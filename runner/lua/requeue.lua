-- requeue: put a job the runner took but never started back at the front of the queue.
--
-- Used when a runner stops between taking a job and forking for it, so the job
-- did not run and no attempt is counted or recorded.
--
-- KEYS[1]  sigrun:{q}:inflight:<runner>
-- KEYS[2]  sigrun:{q}:   per-queue prefix (pending, job:<id>)
-- ARGV[1]  payload
-- ARGV[2]  job id (may be empty if the payload is not parseable)
-- ARGV[3]  now
-- Returns 1 when requeued, 0 when it was no longer in flight.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2] .. 'pending', ARGV[1])
if ARGV[2] ~= '' then
  local key = KEYS[2] .. 'job:' .. ARGV[2]
  local timeline = (redis.call('HGET', key, 'timeline') or '') .. ' queued@' .. ARGV[3]
  redis.call('HSET', key, 'state', 'queued', 'timeline', timeline)
end
return 1
