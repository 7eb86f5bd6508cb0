--[[ discard: running -> discarded (the job raised Discard: no retry, no dead letter).

  KEYS[1] job     hash
  KEYS[2] active  zset   running jobs by lease expiry
  KEYS[3] stats   hash   counters
  KEYS[4] marker  zset   wake-up marker (a freed concurrency slot wakes a worker)

  ARGV[1] job id
  ARGV[2] lease token
  ARGV[3] history entry (JSON object without its closing brace)
  ARGV[4] reason (JSON)
  ARGV[5] seconds to keep the finished job

  A job of a flow fails its chain or group (includes/flow.lua).

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
-- include: close_job
-- include: waiting
-- include: lanes
-- include: write_job
-- include: flow
-- include: end_for_good

return end_for_good(
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], "discarded", ARGV[5], "error", ARGV[4]
)
