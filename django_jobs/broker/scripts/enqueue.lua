--[[ enqueue: new job(s) -> queued, or -> scheduled when they are due later.

  KEYS[1] waiting      list   ready jobs of priority 0, FIFO
  KEYS[2] prioritized  zset   ready jobs of any other priority (see waiting.lua)
  KEYS[3] scheduled    zset   delayed jobs by run_at (ms)
  KEYS[4] marker       zset   wakes one idle worker
  KEYS[5] seq          string FIFO sequence
  KEYS[6] stats        hash   counters

  ARGV[1] job key prefix ("{P:q}:job:")
  ARGV[2] number of jobs N; then N groups of 13:
          id, name, args (JSON), kwargs (JSON), options (JSON), priority,
          max_attempts, run_at (ms, 0 = none), delay (ms, 0 = none),
          dedupe key ("" = none; a "{P:q}:dedupe:..." key), dedupe TTL (ms),
          dedupe mode: "" (the TTL: a duplicate while the first job is stored and
          the TTL runs), "until_done" (... while the first has not ended; the TTL
          bounds it) or "debounce" (the job waits the TTL; a duplicate meanwhile
          gives the waiting job its arguments and pushes its start back by the TTL),
          lane ("" = none: "<job name>:<limit key>", see lanes.lua)

  Returns one entry per job: "queued", "scheduled", "exists" when a job with that
  id is already stored, or "duplicate:<id>" when the dedupe key is held by the
  live job <id>. Nothing is written for the last two but a debounced job's new
  arguments and start. A dedupe key of the wrong type (not a string) is moved
  aside (to "{P:q}:quarantined:dedupe:<key>") and holds nothing.
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: waiting
-- include: lanes
-- include: write_job

local waitingKey, prioritizedKey, scheduledKey, markerKey, seqKey, statsKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
-- No upgrade_waiting here: the only touch of the waiting key is a push, which folds
-- an earlier build's sorted set in when it meets one (push_waiting).
local jobPrefix = ARGV[1]
local count = tonumber(ARGV[2])
local now = now_ms()
local ENDED = {succeeded = true, dead = true, discarded = true, cancelled = true}

-- Whether the job holding a dedupe key makes a new one a duplicate, by mode. A
-- "job" that is not a hash (garbage) is no live job: it holds nothing.
local function holds(holder, mode)
  local state = redis.pcall("HGET", jobPrefix .. holder, "state")
  if type(state) == "table" then return false end
  if mode == "until_done" then return state and not ENDED[state] end
  if mode == "debounce" then return state == "scheduled" end
  return state ~= false
end

-- The id of the job holding a dedupe key, or false. A key of another type (written
-- by something else) failed every enqueue with that dedupe key, for good: it is
-- moved aside, as keys.quarantined names it, and the key is free.
local function holder_of(dedupeKey)
  local holder = redis.pcall("GET", dedupeKey)
  if type(holder) ~= "table" then return holder end
  local close = string.find(dedupeKey, "}", 1, true)
  rcall("RENAME", dedupeKey,
    string.sub(dedupeKey, 1, close) .. ":quarantined" .. string.sub(dedupeKey, close + 1))
  return false
end

local states = {}
local written = 0
for n = 0, count - 1 do
  local base = 3 + n * 13
  local id, dedupeKey, ttl, mode = ARGV[base], ARGV[base + 9], ARGV[base + 10], ARGV[base + 11]
  local holder = dedupeKey ~= "" and holder_of(dedupeKey)
  local state
  if holder and holder ~= id and holds(holder, mode) then
    state = "duplicate:" .. holder
    if mode == "debounce" then
      local runAt = now + tonumber(ttl)
      rcall("HSET", jobPrefix .. holder, "args", ARGV[base + 2], "kwargs", ARGV[base + 3],
            "run_at", runAt)
      rcall("ZADD", scheduledKey, runAt, holder)
      rcall("SET", dedupeKey, holder, "PX", ttl)
    end
  else
    local job = {unpack(ARGV, base, base + 8)}
    job[10] = ARGV[base + 12]
    if mode == "debounce" then job[8], job[9] = 0, ttl end
    state = write_job(jobPrefix, waitingKey, prioritizedKey, scheduledKey, seqKey, job, now)
    if state ~= "exists" then
      written = written + 1
      if dedupeKey ~= "" then rcall("SET", dedupeKey, id, "PX", ttl) end
    end
  end
  states[#states + 1] = state
end

if written > 0 then
  -- Wake an idle worker; for a delayed job it recomputes how long to sleep.
  rcall("ZADD", markerKey, 0, "m")
  count_enqueued(statsKey, now, written)
end
return states
