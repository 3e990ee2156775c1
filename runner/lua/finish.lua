-- finish: write the outcome of one attempt, exactly once.
--
-- The job leaves the in-flight list only here, and only if it is still there:
-- whoever records a death first (the runner, a reaper, the operator) wins, and
-- the others get 0 and record nothing.  What happens next (final state, retry
-- after a backoff, requeue at the front) was decided by the caller's policy;
-- this script only carries it out.
--
-- KEYS[1]  sigrun:{q}:inflight:<runner>
-- KEYS[2]  sigrun:{q}:   per-queue prefix: job:<id>, stats, history, failed, pending, delayed
-- ARGV[1]  the payload as it sits in the in-flight list
-- ARGV[2]  job id
-- ARGV[3]  outcome of this attempt: succeeded | failed | dirty
-- ARGV[4]  next state: succeeded | failed | dirty (final) | retrying | queued
-- ARGV[5]  record JSON for history (empty on success)
-- ARGV[6]  next payload when the job runs again (empty otherwise)
-- ARGV[7]  due time of the next attempt (retrying only)
-- ARGV[8]  now
-- ARGV[9]  result JSON (success only, may be empty)
-- ARGV[10] seconds a finished job's hash is kept
-- ARGV[11] history length cap
-- ARGV[12] cause (may be empty)
-- ARGV[13] "1" to put the next payload at the front of the queue (shutdown requeue)
-- Returns 1 when recorded, 0 when the job was no longer in flight.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
local base = KEYS[2]
local job = base .. 'job:' .. ARGV[2]
local state = ARGV[4]

redis.call('HINCRBY', base .. 'stats', 'processed', 1)
redis.call('HINCRBY', base .. 'stats', ARGV[3], 1)
-- The timeline names the attempt's outcome, then where the job went (unless that is the same).
local timeline = (redis.call('HGET', job, 'timeline') or '') .. ' ' .. ARGV[3] .. '@' .. ARGV[8]
if state ~= ARGV[3] then
  timeline = timeline .. ' ' .. state .. '@' .. ARGV[8]
end
redis.call('HSET', job, 'state', state, 'outcome', ARGV[3], 'cause', ARGV[12], 'ended_at', ARGV[8],
           'timeline', timeline)

if ARGV[9] ~= '' then
  redis.call('HSET', job, 'result', ARGV[9])
end
if ARGV[5] ~= '' then
  redis.call('HSET', job, 'record', ARGV[5])
  redis.call('XADD', base .. 'history', 'MAXLEN', '~', ARGV[11], '*', 'record', ARGV[5])
end

if state == 'retrying' or state == 'queued' then
  redis.call('HINCRBY', base .. 'stats', 'retried', 1)
  redis.call('HSET', job, 'payload', ARGV[6])
  redis.call('PERSIST', job)
  if state == 'queued' then
    if ARGV[13] == '1' then
      redis.call('RPUSH', base .. 'pending', ARGV[6])
    else
      redis.call('LPUSH', base .. 'pending', ARGV[6])
    end
  else
    redis.call('ZADD', base .. 'delayed', ARGV[7], ARGV[6])
  end
else
  if state ~= 'succeeded' then
    redis.call('ZADD', base .. 'failed', ARGV[8], ARGV[2])
  end
  redis.call('EXPIRE', job, ARGV[10])
end
return 1
