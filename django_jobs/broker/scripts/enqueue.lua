--[[ enqueue: new job(s) -> queued, or -> scheduled when they are due later.

  KEYS[1] waiting    zset   ready jobs by priority score
  KEYS[2] scheduled  zset   delayed jobs by run_at (ms)
  KEYS[3] marker     zset   wakes one idle worker
  KEYS[4] seq        string FIFO sequence
  KEYS[5] stats      hash   counters

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
-- include: waiting_score

local waitingKey, scheduledKey, markerKey, seqKey, statsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jobPrefix = ARGV[1]
local count = tonumber(ARGV[2])
local now = now_ms()
local states = {}
local written = 0

for n = 0, count - 1 do
  local base = 3 + n * 11
  local id, priority = ARGV[base], ARGV[base + 5]
  local dedupeKey = ARGV[base + 9]
  local jobKey = jobPrefix .. id
  local holder = dedupeKey ~= "" and rcall("GET", dedupeKey)
  if rcall("EXISTS", jobKey) == 1 then
    states[#states + 1] = "exists"
  elseif holder and rcall("EXISTS", jobPrefix .. holder) == 1 then
    states[#states + 1] = "duplicate:" .. holder
  else
    if dedupeKey ~= "" then
      rcall("SET", dedupeKey, id, "PX", ARGV[base + 10])
    end
    local runAt = tonumber(ARGV[base + 7])
    local delay = tonumber(ARGV[base + 8])
    if delay > 0 then runAt = now + delay end
    local fields = {"name", ARGV[base + 1], "args", ARGV[base + 2], "kwargs", ARGV[base + 3],
                    "priority", priority, "max_attempts", ARGV[base + 6], "attempt", 0,
                    "enqueued_at", now}
    if ARGV[base + 4] ~= "{}" then
      fields[#fields + 1] = "options"; fields[#fields + 1] = ARGV[base + 4]
    end
    if runAt > now then
      fields[#fields + 1] = "state"; fields[#fields + 1] = "scheduled"
      fields[#fields + 1] = "run_at"; fields[#fields + 1] = runAt
      rcall("HSET", jobKey, unpack(fields))
      rcall("ZADD", scheduledKey, runAt, id)
      states[#states + 1] = "scheduled"
    else
      fields[#fields + 1] = "state"; fields[#fields + 1] = "queued"
      rcall("HSET", jobKey, unpack(fields))
      rcall("ZADD", waitingKey, waiting_score(priority, rcall("INCR", seqKey)), id)
      states[#states + 1] = "queued"
    end
    written = written + 1
  end
end

if written > 0 then
  rcall("HINCRBY", statsKey, "enqueued", written)
  -- Wake an idle worker; for a delayed job it recomputes how long to sleep.
  rcall("ZADD", markerKey, 0, "m")
end
return states
