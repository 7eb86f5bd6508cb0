--[[ enqueue_one: one plain job -> queued, or -> scheduled when it has a delay.

  What enqueue.lua does for a job with no dedupe key, no start time and no lane
  (limit_by), in a script a fifth of its size: Redis runs a script's whole body
  on every call, defining each function of its includes, and enqueue.lua's
  dedupe modes and lanes cost a plain job about a sixth of its Redis time
  (bench/PROFILE.md). single_enqueue.py picks this script for such a job; what
  it stores is the same as enqueue.lua's write_job (tests/test_single_enqueue.py
  compares the two).

  The path of a job of priority 0 with no delay, what a view enqueues, is kept
  straight: the includes only another priority needs (waiting's four functions)
  are defined inside their branch, so the common call does not build them.

  Every key and argument Redis is handed costs it about 1,300 instructions a call
  (a twelfth of the script's work: read, made a Lua string, collected), so a job
  of priority 0 with no delay, the common call, is sent only what its path
  uses: 3 keys and 7 arguments; any other job all 6 and 9.

  KEYS[1] waiting      list   ready jobs of priority 0
  KEYS[2] marker       zset   wakes one idle worker
  KEYS[3] stats        hash   counters (see count_enqueued.lua)
  KEYS[4] prioritized  zset   ready jobs of any other priority  } not sent for
  KEYS[5] scheduled    zset   delayed jobs by run_at (ms)        } the common
  KEYS[6] seq          string FIFO sequence among priorities     } call
  ARGV[1] job key prefix ("{P:q}:job:"); then id, name, args (JSON), kwargs
          (JSON), options (JSON), max_attempts; then, not sent for the common
          call, priority and delay (ms, 0 = none)

  Returns "queued", "scheduled", or "exists" when a job with that id is already
  stored (nothing is written then); "again" when the common call's push met
  something else than a list (nothing is written then either: the caller sends
  the job again with every key, see single_enqueue.py).
]]
local rcall = redis.call
-- include: count_enqueued
-- include: job_fields

local id, priority = ARGV[2], ARGV[8] or "0"
local jobKey = ARGV[1] .. id
if rcall("EXISTS", jobKey) == 1 then return "exists" end
local time = rcall("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local fields = job_fields(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], priority, now)
-- The index first: should it fail (a key of the wrong type), the script stops
-- before the hash exists, and nothing of this job is stored.
local delay = tonumber(ARGV[9] or "0")
local state = "queued"
if delay > 0 then
  local runAt = now + delay
  rcall("ZADD", KEYS[5], runAt, id)
  state = "scheduled"
  fields[#fields + 1] = "run_at"; fields[#fields + 1] = runAt
elseif priority ~= "0" or type(redis.pcall("RPUSH", KEYS[1], id)) == "table" then
  -- Another priority, or the push met something else than a list (an earlier
  -- build's sorted set, which push_waiting folds in, or a wrong type: it raises).
  if #KEYS < 6 then return "again" end
-- include: waiting
  push_waiting(KEYS[1], KEYS[4], KEYS[6], id, priority)
end
fields[#fields + 1] = "state"; fields[#fields + 1] = state
rcall("HSET", jobKey, unpack(fields))
-- Wake an idle worker; for a delayed job it recomputes how long to sleep.
rcall("ZADD", KEYS[2], "0", "m")
count_enqueued(KEYS[3], now, 1)
return state
