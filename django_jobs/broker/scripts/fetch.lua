--[[ fetch: due scheduled/retrying -> queued, then up to N queued -> running (leased).

  KEYS[1] waiting      list   ready jobs of priority 0, FIFO
  KEYS[2] prioritized  zset   ready jobs of any other priority (see waiting.lua)
  KEYS[3] scheduled    zset   delayed jobs by run_at
  KEYS[4] retrying     zset   jobs in backoff by retry_at
  KEYS[5] active       zset   running jobs by lease expiry
  KEYS[6] marker       zset   wake-up marker
  KEYS[7] seq          string FIFO sequence
  KEYS[8] paused       string present while the queue is paused

  ARGV[1] job key prefix
  ARGV[2] worker id
  ARGV[3] lease length (ms)
  ARGV[4] max jobs to take (N)

  Returns {next_due, now, job...}: next_due is the ms time the earliest delayed job
  comes due (-1 if none), now the server time; each job is 8 entries:
  id, name, args, kwargs, options, attempt, max_attempts, enqueued_at.
  The lease token a worker must present later is "<worker id>#<attempt>".
]]
local rcall = redis.call
-- include: now_ms
-- include: waiting
-- include: read_job
-- include: count_field
-- include: promote_due

local waitingKey, prioritizedKey, scheduledKey, retryingKey, activeKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
upgrade_waiting(waitingKey, prioritizedKey)
local markerKey, seqKey, pausedKey = KEYS[6], KEYS[7], KEYS[8]
local jobPrefix, workerId = ARGV[1], ARGV[2]
local leaseMs, wanted = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()

-- Look at the earliest entry first: promotion (a range scan) runs only when one is due.
local nextDue = -1
for _, key in ipairs({scheduledKey, retryingKey}) do
  local first = rcall("ZRANGE", key, 0, 0, "WITHSCORES")
  if first[2] and tonumber(first[2]) <= now then
    promote_due(key, waitingKey, prioritizedKey, seqKey, jobPrefix, now, 1000)
    first = rcall("ZRANGE", key, 0, 0, "WITHSCORES")
  end
  if first[2] then
    local due = tonumber(first[2])
    if nextDue < 0 or due < nextDue then nextDue = due end
  end
end

local result = {nextDue, now}
if rcall("EXISTS", pausedKey) == 1 then return result end

-- Lease popped ids. One that holds no job, or a job that is not queued (never
-- expected: every transition out of queued takes its id out of waiting), is
-- dropped, and more are taken in its place, so a short answer always means the
-- queue is empty.
local taken, poppedAny = 0, false
local function lease(ids)
  poppedAny = true
  for _, id in ipairs(ids) do
    local jobKey = jobPrefix .. id
    local job = read_job(jobKey, "name", "args", "kwargs", "options", "max_attempts",
                         "enqueued_at", "attempt", "state")
    if job and (not job[8] or job[8] == "queued") then
      -- Numbers are read defensively: a malformed field must not stop the script.
      local attempt = count_field(job[7], 0) + 1
      rcall("HSET", jobKey, "attempt", attempt, "state", "running", "started_at", now,
            "worker", workerId, "lease", workerId .. "#" .. attempt)
      rcall("ZADD", activeKey, now + leaseMs, id)
      local n = #result
      result[n + 1] = id
      result[n + 2] = job[1] or ""
      result[n + 3] = job[2] or ""
      result[n + 4] = job[3] or "{}"
      result[n + 5] = job[4] or "{}"
      result[n + 6] = attempt
      result[n + 7] = count_field(job[5], 1)
      result[n + 8] = math.floor(tonumber(job[6]) or 0)
      taken = taken + 1
    end
  end
end

local function batch() return math.min(wanted - taken, 1000) end

-- Higher priority first: above 0 (the sorted set's low scores), then 0 (the list),
-- then below 0.
local prioritized = rcall("EXISTS", prioritizedKey) == 1
local belowZero = "(" .. string.format("%.0f", PRIORITY_ZERO_SCORE)
-- (Commands as old as Redis 5: ZRANGE BYSCORE and LPOP with a count need 6.2.)
while prioritized and taken < wanted do
  local ids = rcall("ZRANGEBYSCORE", prioritizedKey, "-inf", belowZero, "LIMIT", 0, batch())
  if #ids == 0 then break end
  rcall("ZREM", prioritizedKey, unpack(ids))
  lease(ids)
end
while taken < wanted do
  local n = batch()
  local ids = rcall("LRANGE", waitingKey, 0, n - 1)
  if #ids == 0 then break end
  rcall("LTRIM", waitingKey, #ids, -1)
  lease(ids)
end
while prioritized and taken < wanted do
  local popped = rcall("ZPOPMIN", prioritizedKey, batch())
  if #popped == 0 then break end
  local ids = {}
  for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
  lease(ids)
end

-- Pass the wake-up on, so another idle worker joins in when more work is left, or,
-- when this worker took jobs (and may be busy with them when it comes due), learns
-- when the next delayed job is due.
if (taken > 0 and nextDue >= 0)
    or (poppedAny and rcall("EXISTS", waitingKey, prioritizedKey) > 0) then
  rcall("ZADD", markerKey, 0, "m")
end
return result
