--[[ renew: extend the leases of jobs a live worker still holds (running, or
  waiting in its prefetch buffer).

  KEYS[1] active  zset   running jobs by lease expiry

  ARGV[1] job key prefix
  ARGV[2] lease length (ms)
  ARGV[3..] pairs of job id, lease token

  Returns the positions (1-based, in pair order) of the jobs whose lease is no
  longer this worker's: taken back and waiting or running elsewhere, finished
  elsewhere, or gone. A job this worker has just ended itself is among them too;
  the worker tells the two apart, since it knows what it ended.
]]
local rcall = redis.call
-- include: now_ms

local activeKey, jobPrefix = KEYS[1], ARGV[1]
local expiresAt = now_ms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local lease = redis.pcall("HGET", jobPrefix .. id, "lease")
  if lease == ARGV[i + 1] then
    rcall("ZADD", activeKey, "XX", expiresAt, id)
  else
    lost[#lost + 1] = (i - 1) / 2
  end
end
return lost
