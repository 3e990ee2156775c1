-- forget_runner: drop a runner from a queue's index once its in-flight list is empty.
--
-- KEYS[1]  sigrun:{q}:inflight:<runner>
-- KEYS[2]  sigrun:{q}:runners
-- ARGV[1]  runner id
-- Returns 1 when forgotten, 0 when it still holds jobs (they must be recorded first).
if redis.call('LLEN', KEYS[1]) > 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
