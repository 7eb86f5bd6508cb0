--[[ bury: running -> dead. The job stays in the dead zset (and its hash is kept)
  until its DeadLetter row is committed; then forget_dead.lua lets it expire.

  KEYS[1] job     hash
  KEYS[2] active  zset   running jobs by lease expiry
  KEYS[3] dead    zset   dead jobs awaiting their DeadLetter row, by time of death
  KEYS[4] stats   hash   counters
  KEYS[5] marker  zset   wake-up marker (a freed concurrency slot wakes a worker)

  ARGV[1] job id
  ARGV[2] lease token
  ARGV[3] history entry (JSON object without its closing brace)
  ARGV[4] last error (JSON)
  ARGV[5] the error's class (for the failure counters)

  A job of a flow holds its flow (includes/flow.lua).

  Returns 1, or -1 when the lease was lost (nothing is changed), or a WRONGTYPE
  error naming a key it would write that holds the wrong type (nothing is changed;
  type_error.lua).
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: type_error
-- include: count_type_error
-- include: ended_type_error
-- include: end_attempt
-- include: free_slot
-- include: waiting
-- include: lanes
-- include: write_job
-- include: flow

local jobKey, activeKey, deadKey, statsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local markerKey = KEYS[5]
local now = now_ms()
local held = attempt_held(jobKey, ARGV[2], "history", "name", "started_at", "slot")
if not held then return -1 end
if held.err then return held end
local wrong = type_error(deadKey, "zset") or count_type_error(statsKey, now)
  or ended_type_error(held[5], markerKey, jobKey) or flow_type_error(jobKey, ARGV[1], "dead", now)
if wrong then return wrong end
rcall("ZREM", activeKey, ARGV[1])
local job = end_attempt(held, jobKey, ARGV[3], now)
free_slot(job[3], ARGV[1], markerKey)
rcall("HSET", jobKey, "state", "dead", "error", ARGV[4])
rcall("ZADD", deadKey, now, ARGV[1])
count_end(statsKey, now, job[1], "dead", job[2], ARGV[5])
flow_job_ended(jobKey, ARGV[1], "dead", nil, now)
return 1
