--[[ start: a leased job that waited in this worker (prefetched, or fetched by a
  reply read late) is about to run. The fence: it runs only if its lease is still
  this worker's at that moment, so a worker that was stopped (SIGSTOP, a long GC
  or GIL pause, a frozen VM) past its lease never runs a job that another worker
  has taken back, or even finished, meanwhile.

  KEYS[1] job     hash
  KEYS[2] active  zset   running jobs by lease expiry
  KEYS[3] paused  string present while the job's queue is paused

  ARGV[1] job id
  ARGV[2] lease token ("<worker id>#<lease number>", see fetch.lua)
  ARGV[3] lease length (ms)

  Returns {code, now}: code 1 = run it (started_at stamped, lease extended from
  now), 2 = a cancel was requested while it waited (nothing changed: the caller
  ends it cancelled), 3 = its queue was paused while it waited (nothing changed:
  the caller gives it back), -1 = the lease is no longer this worker's (nothing
  changed).
]]
local rcall = redis.call
-- include: now_ms

local jobKey, activeKey = KEYS[1], KEYS[2]
local now = now_ms()
local job = redis.pcall("HMGET", jobKey, "lease", "cancel_requested")
if type(job) ~= "table" or job.err or job[1] ~= ARGV[2] then return {-1, now} end
if job[2] then return {2, now} end
if rcall("EXISTS", KEYS[3]) == 1 then return {3, now} end
rcall("HSET", jobKey, "started_at", now)
rcall("ZADD", activeKey, "XX", now + tonumber(ARGV[3]), ARGV[1])
return {1, now}
