--[[ run_now: scheduled or retrying -> queued at once (an operator's "retry now").

  KEYS[1] job          hash
  KEYS[2] waiting      list   ready jobs of priority 0
  KEYS[3] prioritized  zset   ready jobs of any other priority
  KEYS[4] scheduled    zset   delayed jobs
  KEYS[5] retrying     zset   jobs in backoff
  KEYS[6] seq          string FIFO sequence
  KEYS[7] marker       zset   wake-up marker

  ARGV[1] job id

  Returns the job's state afterwards ("queued" if it was moved), or false when no
  such job is stored. A job in any other state is left as it is. A key it would
  write that holds the wrong type is named in a WRONGTYPE error, nothing changed
  (type_error.lua).
]]
local rcall = redis.call
-- include: type_error
-- include: waiting
-- include: lanes

local jobKey, waitingKey, prioritizedKey, scheduledKey, retryingKey, seqKey, markerKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
upgrade_waiting(waitingKey, prioritizedKey)
local id = ARGV[1]
local job = redis.pcall("HMGET", jobKey, "state", "priority", "lane", "lscore")
if type(job) ~= "table" or job.err or not job[1] then return false end
local from = ({scheduled = scheduledKey, retrying = retryingKey})[job[1]]
if not from then return job[1] end
local wrong = type_error(waitingKey, "list") or type_error(prioritizedKey, "zset")
  or type_error(seqKey, "string") or type_error(markerKey, "zset")
if wrong then return wrong end
if rcall("ZREM", from, id) == 0 then
  if job[1] ~= "retrying" or not job[3] then return job[1] end
  -- An ordered retry waits in its lane (retry.lua): the lane may be served now.
  rcall("HSET", jobKey, "state", "queued")
  local tag = queue_tag(jobKey)
  if tonumber(rcall("ZSCORE", tag .. ":keys", job[3])) ~= IN_RING then lane_ready(tag, job[3]) end
  rcall("ZADD", markerKey, 0, "m")
  return "queued"
end
requeue(waitingKey, prioritizedKey, seqKey, jobKey, id, job[2], job[3], job[4])
rcall("HSET", jobKey, "state", "queued")
rcall("ZADD", markerKey, 0, "m")
return "queued"
