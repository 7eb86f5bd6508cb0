--[[ recover: running with an expired lease (its worker died or hung) -> queued, or
  -> dead once it has used all its attempts. A lost run counts as an attempt and is
  recorded in the history as outcome "lost" and in the job's "stalls" counter.

  KEYS[1] active       zset   running jobs by lease expiry
  KEYS[2] waiting      list   ready jobs of priority 0
  KEYS[3] prioritized  zset   ready jobs of any other priority
  KEYS[4] dead         zset   dead jobs awaiting their DeadLetter row
  KEYS[5] seq          string FIFO sequence
  KEYS[6] marker       zset   wake-up marker
  KEYS[7] stats        hash   counters
  KEYS[8] pulse        hash   when a worker last reached Redis (includes/pulse.lua)

  ARGV[1] job key prefix
  ARGV[2] max jobs to recover in this call
  ARGV[3] grace (ms) after which a dead job still awaiting its DeadLetter row is
          reported as pending (its own worker should have written the row by then)
  ARGV[4] seconds to keep a job that ends cancelled here
  ARGV[5] the caller's lease (ms): a call finds a stall when nobody reached Redis
          for half the shortest lease on the queue (includes/pulse.lua), and
          holds a lease for at most the caller's

  A lease that ran out while nobody could reach Redis (a stall: DEBUG SLEEP, a
  fork, a paused VM, an outage) is not taken back at once when Redis answers
  again, since its worker may be alive with its renewal queued behind this call:
  it gets back the time it had left when the gap began (its attempt began in the
  gap: from then), at most the caller's lease, and is taken back only if it is
  still not renewed after that.

  A job asked to cancel while it ran is not run again: it ends cancelled, as
  retry.lua ends it when its own worker gives up.

  A job of a flow that dies here holds its flow (includes/flow.lua).

  Returns {requeued ids, dead ids, next expiry, now, pending dead ids, cancelled
  ids}: next expiry is when the earliest remaining lease runs out, or a held one is
  due (-1 if none), so the caller knows when to look again instead of polling;
  cancelled ids, the jobs that ended cancelled here (their worker announces them as
  a cancel). Or a WRONGTYPE error naming a key it would write that holds the wrong
  type (nothing is changed; type_error.lua).
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: type_error
-- include: count_type_error
-- include: ended_type_error
-- include: end_attempt
-- include: waiting
-- include: lanes
-- include: close_job
-- include: read_job
-- include: free_slot
-- include: write_job
-- include: flow
-- include: pulse

local activeKey, waitingKey, prioritizedKey, deadKey, seqKey, markerKey, statsKey, pulseKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local jobPrefix, leaseMs = ARGV[1], tonumber(ARGV[5])
local now = now_ms()
local stallFrom, resumedAt = pulse(pulseKey, now, leaseMs)
if not stallFrom then return resumedAt end -- the pulse's refusal: nothing written

-- When a lease that ran out is due to be taken back: at once, unless it still ran
-- when the latest gap began (two gaps close together count as one) and Redis
-- answers again since less than a lease; then once it had the time it had left at
-- the gap's start (from its attempt's start if that came later) after the gap, a
-- lease at most.
local function due(id, expiresAt)
  if expiresAt <= stallFrom or now >= resumedAt + leaseMs then return expiresAt end
  local started, lastHeard = tonumber(redis.pcall("HGET", jobPrefix .. id, "started_at")), stallFrom
  if started and started > stallFrom and started <= resumedAt then lastHeard = started end
  return math.min(expiresAt + resumedAt - lastHeard, resumedAt + leaseMs)
end

-- The earliest lease first: the range scan runs only when one has expired.
local earliest = rcall("ZRANGE", activeKey, 0, 0, "WITHSCORES")
local expired, heldUntil = {}, nil
if earliest[2] and tonumber(earliest[2]) <= now then
  local scored = rcall("ZRANGEBYSCORE", activeKey, "-inf", now, "WITHSCORES", "LIMIT", 0, tonumber(ARGV[2]))
  for i = 1, #scored, 2 do
    local id = scored[i]
    local dueAt = due(id, tonumber(scored[i + 1]))
    if dueAt <= now then
      expired[#expired + 1] = id
    elseif not heldUntil or dueAt < heldUntil then
      heldUntil = dueAt
    end
  end
end
local requeued, dead, cancelled = {}, {}, {}
-- Only a pass that takes a lease back writes to waiting (most find none: an idle
-- worker runs one every few seconds).
if #expired > 0 then
  -- Every key a job taken back would write is checked before the first write.
  -- (A sorted set at waiting is an earlier build's layout: upgrade_waiting folds it in.)
  local wrong = type_error(deadKey, "zset") or type_error(prioritizedKey, "zset")
    or (rcall("TYPE", waitingKey)["ok"] ~= "zset" and type_error(waitingKey, "list"))
    or type_error(seqKey, "string") or type_error(markerKey, "zset") or count_type_error(statsKey, now)
  for _, id in ipairs(expired) do
    if wrong then return wrong end
    local jobKey = jobPrefix .. id
    local job = redis.pcall("HMGET", jobKey, "slot", "lane", "lease", "attempt", "max_attempts",
                            "cancel_requested")
    if not job.err then -- read_job below treats a job that is not a hash as gone
      -- How the loop below ends a job it takes back (nil: queued again).
      local outcome = job[3] and (job[6] and "cancelled"
        or (tonumber(job[4]) or 1) >= (tonumber(job[5]) or 1) and "dead")
      wrong = ended_type_error(job[1], markerKey, jobKey, job[2] or nil)
        or (outcome and flow_type_error(jobKey, id, outcome, now))
    end
  end
  if wrong then return wrong end
  upgrade_waiting(waitingKey, prioritizedKey)
end

for _, id in ipairs(expired) do
  local jobKey = jobPrefix .. id
  local job = read_job(jobKey, "lease", "attempt", "max_attempts", "worker", "started_at", "priority",
                         "lane", "lscore")
  if not job or not job[1] then
    rcall("ZREM", activeKey, id)
  else
    local attempt = tonumber(job[2]) or 1
    local message = "worker " .. (job[4] or "?") .. " stopped renewing its lease (killed, OOM, lost host)"
    local entry = cjson.encode({attempt = attempt, worker = job[4] or "", started_at = tonumber(job[5]),
                                outcome = "lost", error_class = "WorkerLost", error_message = message})
    local held = attempt_held(jobKey, job[1], "history", "name", "started_at", "slot")
    rcall("ZREM", activeKey, id)
    local ended = end_attempt(held, jobKey, string.sub(entry, 1, -2), now)
    rcall("HINCRBY", jobKey, "stalls", 1)
    free_slot(ended[3], id, markerKey)
    local err = cjson.encode({class = "WorkerLost", message = message, traceback = ""})
    local outcome = "retried"
    if rcall("HEXISTS", jobKey, "cancel_requested") == 1 then
      close_job(jobKey, statsKey, "cancelled", tonumber(ARGV[4]) or 86400, "error", err)
      outcome = "cancelled"
      cancelled[#cancelled + 1] = id
      flow_job_ended(jobKey, id, "cancelled", nil, now)
    elseif attempt >= (tonumber(job[3]) or 1) then
      rcall("HSET", jobKey, "state", "dead", "error", err)
      rcall("ZADD", deadKey, now, id)
      outcome = "dead"
      dead[#dead + 1] = id
      flow_job_ended(jobKey, id, "dead", nil, now)
    else
      rcall("HSET", jobKey, "state", "queued", "error", err)
      requeue(waitingKey, prioritizedKey, seqKey, jobKey, id, job[6], job[7], job[8])
      requeued[#requeued + 1] = id
    end
    count_queue(statsKey, now, "stalled", 1)
    count_end(statsKey, now, ended[1], outcome, ended[2], "WorkerLost")
  end
end
if #requeued > 0 then rcall("ZADD", markerKey, 0, "m") end

if heldUntil then -- the earliest lease not yet run out (held ones have)
  earliest = rcall("ZRANGEBYSCORE", activeKey, now + 1, "+inf", "WITHSCORES", "LIMIT", 0, 1)
elseif #expired > 0 then
  earliest = rcall("ZRANGE", activeKey, 0, 0, "WITHSCORES")
end
local nextExpiry = tonumber(earliest[2]) or -1
if heldUntil and (nextExpiry < 0 or heldUntil < nextExpiry) then nextExpiry = heldUntil end
local pending = rcall("ZRANGEBYSCORE", deadKey, "-inf", now - tonumber(ARGV[3]), "LIMIT", 0, 100)
return {requeued, dead, nextExpiry, now, pending, cancelled}
