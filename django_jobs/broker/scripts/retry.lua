--[[ retry: running -> retrying (backoff); fetch promotes it back to queued when due.

  KEYS[1] job       hash
  KEYS[2] active    zset   running jobs by lease expiry
  KEYS[3] retrying  zset   jobs in backoff by retry_at
  KEYS[4] marker    zset   wake-up marker
  KEYS[5] stats     hash   counters

  ARGV[1] job id
  ARGV[2] lease token
  ARGV[3] backoff (ms)
  ARGV[4] history entry (JSON object without its closing brace)
  ARGV[5] last error (JSON)

  Returns the retry time (ms), or -1 when the lease was lost (nothing is changed).
]]
local rcall = redis.call
-- include: now_ms
-- include: end_attempt

local jobKey, activeKey, retryingKey, markerKey, statsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = now_ms()
if not end_attempt(jobKey, activeKey, ARGV[1], ARGV[2], ARGV[4], now) then return -1 end
local retryAt = now + tonumber(ARGV[3])
rcall("HSET", jobKey, "state", "retrying", "run_at", retryAt, "error", ARGV[5])
rcall("ZADD", retryingKey, retryAt, ARGV[1])
rcall("ZADD", markerKey, 0, "m")
rcall("HINCRBY", statsKey, "retried", 1)
return retryAt
