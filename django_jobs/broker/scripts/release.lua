--[[ release: running -> queued without using up an attempt (graceful shutdown gives
  back what did not finish in its grace period).

  KEYS[1] job      hash
  KEYS[2] active   zset   running jobs by lease expiry
  KEYS[3] waiting      list   ready jobs of priority 0
  KEYS[4] prioritized  zset   ready jobs of any other priority
  KEYS[5] seq          string FIFO sequence
  KEYS[6] marker       zset   wake-up marker

  ARGV[1] job id
  ARGV[2] lease token
  ARGV[3] history entry (JSON object without its closing brace)

  Returns 1, or -1 when the lease was lost (nothing is changed).
]]
local rcall = redis.call
-- include: now_ms
-- include: waiting
-- include: end_attempt
-- include: free_slot

local jobKey, activeKey, waitingKey, prioritizedKey, seqKey, markerKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
upgrade_waiting(waitingKey, prioritizedKey)
local now = now_ms()
local job = end_attempt(jobKey, activeKey, ARGV[1], ARGV[2], ARGV[3], now)
if not job then return -1 end
free_slot(job[3], ARGV[1], markerKey)
rcall("HINCRBY", jobKey, "attempt", -1)
rcall("HSET", jobKey, "state", "queued")
local priority = rcall("HGET", jobKey, "priority") or 0
push_waiting(waitingKey, prioritizedKey, seqKey, ARGV[1], priority)
rcall("ZADD", markerKey, 0, "m")
return 1
