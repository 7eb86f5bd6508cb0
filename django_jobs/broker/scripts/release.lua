--[[ release: running -> queued without using up an attempt (graceful shutdown gives
  back what did not finish in its grace period).

  KEYS[1] job      hash
  KEYS[2] active   zset   running jobs by lease expiry
  KEYS[3] waiting  zset
  KEYS[4] seq      string FIFO sequence
  KEYS[5] marker   zset   wake-up marker

  ARGV[1] job id
  ARGV[2] lease token
  ARGV[3] history entry (JSON object without its closing brace)

  Returns 1, or -1 when the lease was lost (nothing is changed).
]]
local rcall = redis.call
-- include: now_ms
-- include: waiting_score
-- include: end_attempt

local jobKey, activeKey, waitingKey, seqKey, markerKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = now_ms()
if not end_attempt(jobKey, activeKey, ARGV[1], ARGV[2], ARGV[3], now) then return -1 end
rcall("HINCRBY", jobKey, "attempt", -1)
rcall("HSET", jobKey, "state", "queued")
local priority = rcall("HGET", jobKey, "priority") or 0
rcall("ZADD", waitingKey, waiting_score(priority, rcall("INCR", seqKey)), ARGV[1])
rcall("ZADD", markerKey, 0, "m")
return 1
