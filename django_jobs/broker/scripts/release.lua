--[[ release: running -> queued without using up an attempt (graceful shutdown gives
  back what did not finish in its grace period; a job that raised RateLimited goes
  back and holds its job or queue).

  KEYS[1] job      hash
  KEYS[2] active   zset   running jobs by lease expiry
  KEYS[3] waiting      list   ready jobs of priority 0
  KEYS[4] prioritized  zset   ready jobs of any other priority
  KEYS[5] seq          string FIFO sequence
  KEYS[6] marker       zset   wake-up marker
  KEYS[7] hold         string the job's or the queue's hold (see fetch.lua)
  KEYS[8] retrying     zset   jobs in backoff by retry_at

  ARGV[1] job id
  ARGV[2] lease token
  ARGV[3] history entry (JSON object without its closing brace)
  ARGV[4] how long to hold (ms; 0 = no hold). A longer hold already there stays.
  ARGV[5] not before (ms from now; 0 or absent = at once): the job comes back
          "retrying" at that time, as after a backoff (an ordered keyed job parks
          its lane until then, see retry.lua), still without using an attempt. A
          worker gives back a job whose thread still runs this way, so that no other
          worker starts it before that thread's process is gone (see draining.py).

  A keyed job goes back to its lane at its old place, and a hold holds its lane
  (its key), not its job or queue.

  Returns 1, or -1 when the lease was lost (nothing is changed), or a WRONGTYPE
  error naming a key it would write that holds the wrong type (nothing is changed;
  type_error.lua).
]]
local rcall = redis.call
-- include: now_ms
-- include: type_error
-- include: ended_type_error
-- include: end_attempt
-- include: waiting
-- include: lanes
-- include: wait_until
-- include: free_slot

local jobKey, activeKey, waitingKey, prioritizedKey, seqKey, markerKey, holdKey, retryingKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
upgrade_waiting(waitingKey, prioritizedKey)
local now = now_ms()
local held = attempt_held(jobKey, ARGV[2], "history", "name", "started_at", "slot", "lane")
if not held then return -1 end
if held.err then return held end
local wrong = type_error(waitingKey, "list") or type_error(prioritizedKey, "zset")
  or type_error(seqKey, "string") or type_error(retryingKey, "zset") or type_error(markerKey, "zset")
  or ended_type_error(held[5], markerKey, jobKey, held[6] or nil)
if wrong then return wrong end
rcall("ZREM", activeKey, ARGV[1])
local job = end_attempt(held, jobKey, ARGV[3], now)
free_slot(job[3], ARGV[1], markerKey)
rcall("HINCRBY", jobKey, "attempt", -1)
local notBeforeMs = tonumber(ARGV[5]) or 0
if notBeforeMs > 0 then
  local runAt = now + notBeforeMs
  rcall("HSET", jobKey, "state", "retrying", "run_at", runAt)
  wait_until(jobKey, retryingKey, markerKey, ARGV[1], runAt)
  return 1
end
rcall("HSET", jobKey, "state", "queued")
local job = rcall("HMGET", jobKey, "priority", "lane", "lscore")
requeue(waitingKey, prioritizedKey, seqKey, jobKey, ARGV[1], job[1] or 0, job[2], job[3])
local holdMs = tonumber(ARGV[4])
if holdMs > 0 and job[2] then
  lane_park(queue_tag(jobKey), job[2], now + holdMs)
elseif holdMs > 0 and rcall("PTTL", holdKey) < holdMs then
  rcall("SET", holdKey, 1, "PX", holdMs)
end
rcall("ZADD", markerKey, 0, "m")
return 1
