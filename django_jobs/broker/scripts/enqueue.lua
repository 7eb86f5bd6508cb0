--[[ enqueue: new job(s) -> queued, or -> scheduled when they are due later.

  KEYS[1] waiting      list   ready jobs of priority 0, FIFO
  KEYS[2] prioritized  zset   ready jobs of any other priority (see waiting.lua)
  KEYS[3] scheduled    zset   delayed jobs by run_at (ms)
  KEYS[4] marker       zset   wakes one idle worker
  KEYS[5] seq          string FIFO sequence
  KEYS[6] stats        hash   counters

  ARGV[1] job key prefix ("{P:q}:job:")
  ARGV[2] number of jobs N; then N groups of 11:
          id, name, args (JSON), kwargs (JSON), options (JSON), priority,
          max_attempts, run_at (ms, 0 = none), delay (ms, 0 = none),
          dedupe key ("" = none; a "{P:q}:dedupe:..." key), dedupe TTL (ms)

  Returns one entry per job: "queued", "scheduled", "exists" when a job with that
  id is already stored, or "duplicate:<id>" when the dedupe key is held by the
  live job <id>. Nothing is written for the last two.
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: waiting
-- include: write_job

local waitingKey, prioritizedKey, scheduledKey, markerKey, seqKey, statsKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
upgrade_waiting(waitingKey, prioritizedKey)
local jobPrefix = ARGV[1]
local count = tonumber(ARGV[2])
local now = now_ms()
local states = {}
local written = 0
for n = 0, count - 1 do
  local base = 3 + n * 11
  local id, dedupeKey = ARGV[base], ARGV[base + 9]
  local holder = dedupeKey ~= "" and rcall("GET", dedupeKey)
  local state
  if holder and holder ~= id and rcall("EXISTS", jobPrefix .. holder) == 1 then
    state = "duplicate:" .. holder
  else
    state = write_job(jobPrefix, waitingKey, prioritizedKey, scheduledKey, seqKey,
                      {unpack(ARGV, base, base + 8)}, now)
    if state ~= "exists" then
      written = written + 1
      if dedupeKey ~= "" then rcall("SET", dedupeKey, id, "PX", ARGV[base + 10]) end
    end
  end
  states[#states + 1] = state
end

if written > 0 then
  count_queue(statsKey, now, "enqueued", written)
  -- Wake an idle worker; for a delayed job it recomputes how long to sleep.
  rcall("ZADD", markerKey, 0, "m")
end
return states
