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

  ARGV[6] seconds to keep the job if it ends here (cancelled)
  ARGV[7] the error's class (for the failure counters)

  A keyed job whose key runs one at a time (fetch.lua's "ordered") waits in its
  lane at its place instead, and its lane is parked until the retry time: its
  key's later jobs cannot overtake it (lanes.lua).

  A job of a flow that ends cancelled here fails its chain or group (flow.lua).

  Returns the retry time (ms); 0 when the job had been asked to cancel, so it ends
  cancelled instead of retrying; -1 when the lease was lost (nothing is changed); or
  a WRONGTYPE error naming a key it would write that holds the wrong type (nothing
  is changed; type_error.lua).
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: type_error
-- include: count_type_error
-- include: ended_type_error
-- include: end_attempt
-- include: close_job
-- include: free_slot
-- include: waiting
-- include: lanes
-- include: wait_until
-- include: write_job
-- include: flow

local jobKey, activeKey, retryingKey, markerKey, statsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = now_ms()
local held = attempt_held(jobKey, ARGV[2], "history", "name", "started_at", "slot", "lane", "ordered")
if not held then return -1 end
if held.err then return held end
local cancelled = rcall("HEXISTS", jobKey, "cancel_requested") == 1
local wrong = type_error(retryingKey, "zset") or type_error(markerKey, "zset")
  or count_type_error(statsKey, now)
  or ended_type_error(held[5], markerKey, jobKey, held[7] and held[6] or nil)
  or (cancelled and flow_type_error(jobKey, ARGV[1], "cancelled", now))
if wrong then return wrong end
rcall("ZREM", activeKey, ARGV[1])
local job = end_attempt(held, jobKey, ARGV[4], now)
free_slot(job[3], ARGV[1], markerKey)
if cancelled then
  close_job(jobKey, statsKey, "cancelled", ARGV[6], "error", ARGV[5])
  count_end(statsKey, now, job[1], "cancelled", job[2], ARGV[7])
  flow_job_ended(jobKey, ARGV[1], "cancelled", nil, now)
  return 0
end
local retryAt = now + tonumber(ARGV[3])
rcall("HSET", jobKey, "state", "retrying", "run_at", retryAt, "error", ARGV[5])
wait_until(jobKey, retryingKey, markerKey, ARGV[1], retryAt)
count_end(statsKey, now, job[1], "retried", job[2], ARGV[7])
return retryAt
