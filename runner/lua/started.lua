-- started: mark a job running after the blocking path (BLMOVE) took it.
--
-- The reserve script does this itself; BLMOVE cannot run inside a script, so an
-- idle runner sends this right after its fork.
--
-- KEYS[1]  sigrun:{q}:job:<id>
-- ARGV[1]  runner id
-- ARGV[2]  now
-- ARGV[3]  attempt
local timeline = (redis.call('HGET', KEYS[1], 'timeline') or '') .. ' running@' .. ARGV[2]
redis.call('HSET', KEYS[1], 'state', 'running', 'runner', ARGV[1], 'started_at', ARGV[2],
           'attempt', ARGV[3], 'timeline', timeline)
return 1
