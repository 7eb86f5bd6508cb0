--[[ renew: extend the leases of jobs a live worker is still running.

  KEYS[1] active  zset   running jobs by lease expiry

  ARGV[1] job key prefix
  ARGV[2] lease length (ms)
  ARGV[3..] pairs of job id, lease token

  Returns the ids taken from this worker: leased to another worker, or taken back
  and waiting to run again. A job that just ended normally is not among them.
]]
local rcall = redis.call
-- include: now_ms

local activeKey, jobPrefix = KEYS[1], ARGV[1]
local expiresAt = now_ms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local job = rcall("HMGET", jobPrefix .. id, "lease", "state")
  if job[1] == ARGV[i + 1] then
    rcall("ZADD", activeKey, "XX", expiresAt, id)
  elseif job[1] or job[2] == "queued" then
    lost[#lost + 1] = id
  end
end
return lost
