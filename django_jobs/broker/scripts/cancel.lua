--[[ cancel: scheduled | queued | retrying -> cancelled; a running job is only flagged
  (cancel_requested), and the job itself decides whether to stop.

  KEYS[1] job        hash
  KEYS[2] waiting      list   ready jobs of priority 0
  KEYS[3] prioritized  zset   ready jobs of any other priority
  KEYS[4] scheduled    zset
  KEYS[5] retrying     zset
  KEYS[6] stats        hash   counters

  ARGV[1] job id
  ARGV[2] seconds to keep the finished job

  A job of a flow fails its chain or group (includes/flow.lua).

  Returns the state after the call: "cancelled", "running" (flagged), the job's
  final state if it had already ended, or false if no such job is stored; or a
  WRONGTYPE error naming a key it would write that holds the wrong type (nothing
  is changed; type_error.lua).
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: type_error
-- include: count_type_error
-- include: close_job
-- include: waiting
-- include: lanes
-- include: write_job
-- include: flow

local jobKey, waitingKey, prioritizedKey, scheduledKey, retryingKey, statsKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
upgrade_waiting(waitingKey, prioritizedKey)
local id = ARGV[1]
local state = rcall("HGET", jobKey, "state")
if not state then return false end
local from = {scheduled = scheduledKey, retrying = retryingKey}
if state == "queued" or from[state] then
  local now = now_ms()
  -- The counters and the flow checked first: the job's own set is its first write.
  local wrong = count_type_error(statsKey, now) or flow_type_error(jobKey, id, "cancelled", now)
  if wrong then return wrong end
  local parked = rcall("HGET", jobKey, "parked")
  local lane = rcall("HGET", jobKey, "lane")
  if parked then
    rcall("LREM", parked, 1, id) -- held back by a concurrency limit (fetch.lua)
  elseif lane and state ~= "scheduled" then
    -- A keyed job waits in its lane (an ordered retry too: lanes.lua).
    rcall("ZREM", retryingKey, id)
    rcall("ZREM", queue_tag(jobKey) .. ":key:" .. lane, id)
  elseif state == "queued" then
    remove_waiting(waitingKey, prioritizedKey, id, rcall("HGET", jobKey, "priority"))
  else
    rcall("ZREM", from[state], id)
  end
  close_job(jobKey, statsKey, "cancelled", ARGV[2], "finished_at", now)
  count_end(statsKey, now, rcall("HGET", jobKey, "name"), "cancelled")
  flow_job_ended(jobKey, id, "cancelled", nil, now)
  return "cancelled"
end
if state == "running" then
  rcall("HSET", jobKey, "cancel_requested", 1)
end
return state
