--[[ renew: extend the leases of jobs a live worker still holds (running, or
  waiting in its prefetch buffer).

  KEYS[1] active  zset   running jobs by lease expiry
  KEYS[2] pulse   hash   when a worker last reached Redis (includes/pulse.lua)

  ARGV[1] job key prefix
  ARGV[2] lease length (ms)
  ARGV[3..] pairs of job id, lease token

  Returns the positions (1-based, in pair order) of the jobs whose lease is no
  longer this worker's: taken back and waiting or running elsewhere, finished
  elsewhere, or gone. A job this worker has just ended itself is among them too;
  the worker tells the two apart, since it knows what it ended. Or a WRONGTYPE
  error naming the pulse key when it holds the wrong type (nothing is changed).
]]
local rcall = redis.call
-- include: now_ms
-- include: type_error
-- include: pulse

local activeKey, pulseKey, jobPrefix = KEYS[1], KEYS[2], ARGV[1]
local now, leaseMs = now_ms(), tonumber(ARGV[2])
local stallFrom, refused = pulse(pulseKey, now, leaseMs)
if not stallFrom then return refused end
local expiresAt = now + leaseMs
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
