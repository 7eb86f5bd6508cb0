--[[ cancel: scheduled | queued | retrying -> cancelled; a running job is only flagged
  (cancel_requested), and the job itself decides whether to stop.

  KEYS[1] job        hash
  KEYS[2] waiting    zset
  KEYS[3] scheduled  zset
  KEYS[4] retrying   zset
  KEYS[5] stats      hash   counters

  ARGV[1] job id
  ARGV[2] seconds to keep the finished job

  Returns the state after the call: "cancelled", "running" (flagged), the job's
  final state if it had already ended, or false if no such job is stored.
]]
local rcall = redis.call
-- include: now_ms
-- include: close_job

local jobKey, waitingKey, scheduledKey, retryingKey, statsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local state = rcall("HGET", jobKey, "state")
if not state then return false end
local from = {queued = waitingKey, scheduled = scheduledKey, retrying = retryingKey}
if from[state] then
  rcall("ZREM", from[state], id)
  close_job(jobKey, statsKey, "cancelled", ARGV[2], "finished_at", now_ms())
  return "cancelled"
end
if state == "running" then
  rcall("HSET", jobKey, "cancel_requested", 1)
end
return state
