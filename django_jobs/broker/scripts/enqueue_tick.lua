--[[ enqueue_tick: claim one tick of a schedule and enqueue its job -> queued, in one
  step: however many schedulers race for a tick only the first gets through, and a
  crash can never leave a tick claimed without its job (or a job without its claim).

  KEYS[1] claim      string  the tick's claim; holds the id of the job enqueued for it
  KEYS[2] waiting      list    ready jobs of priority 0, FIFO
  KEYS[3] prioritized  zset    ready jobs of any other priority (see waiting.lua)
  KEYS[4] scheduled    zset    delayed jobs by run_at (ms)
  KEYS[5] marker       zset    wakes one idle worker
  KEYS[6] seq          string  FIFO sequence
  KEYS[7] stats        hash    counters
  KEYS[8] runs         list    the schedule's latest runs, "<tick ms>:<job id>", newest first

  ARGV[1] job key prefix ("{P:q}:job:")
  ARGV[2] seconds to keep the claim (long enough that no scheduler still owes the tick)
  ARGV[3..15] the job: one group of 13 fields in enqueue.lua's order (its dedupe
              fields are not used: a tick's claim already makes it unique)
  ARGV[16]    the tick (ms), for the runs list

  Returns {state, job id}: "queued" (or "scheduled") and the new job's id when this
  call claimed the tick; "claimed" and the id of the job enqueued for the tick before;
  "exists" when a job with the new id is already stored (nothing is written).
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: waiting
-- include: lanes
-- include: write_job

local RECENT_RUNS = 20
local claimKey, waitingKey, prioritizedKey, scheduledKey, markerKey, seqKey, statsKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
upgrade_waiting(waitingKey, prioritizedKey)
local earlier = rcall("GET", claimKey)
if earlier then return {"claimed", earlier} end

local job = {unpack(ARGV, 3, 11)}
job[10] = ARGV[15]
local now = now_ms()
local state = write_job(ARGV[1], waitingKey, prioritizedKey, scheduledKey, seqKey, job, now)
if state == "exists" then return {state, job[1]} end
rcall("SET", claimKey, job[1], "EX", ARGV[2])
-- The runs list only shows the latest runs: one of the wrong type (garbage) must not
-- fail the tick half-way, after its job and claim were written.
local pushed = redis.pcall("LPUSH", KEYS[8], ARGV[16] .. ":" .. job[1])
if type(pushed) == "number" then rcall("LTRIM", KEYS[8], 0, RECENT_RUNS - 1) end
rcall("ZADD", markerKey, 0, "m")
count_enqueued(statsKey, now, 1)
return {state, job[1]}
