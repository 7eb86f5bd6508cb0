--[[ fetch: due scheduled/retrying -> queued, then up to N queued -> running (leased),
  within the queue's and its jobs' limits.

  KEYS[1] waiting      list   ready jobs of priority 0, FIFO
  KEYS[2] prioritized  zset   ready jobs of any other priority (see waiting.lua)
  KEYS[3] scheduled    zset   delayed jobs by run_at
  KEYS[4] retrying     zset   jobs in backoff by retry_at
  KEYS[5] active       zset   running jobs by lease expiry
  KEYS[6] marker       zset   wake-up marker
  KEYS[7] seq          string FIFO sequence
  KEYS[8] paused       string present while the queue is paused
  KEYS[9] held         string present while a job of the queue asked to hold it
                              (RateLimited); expires when the hold ends
  KEYS[10] lanes       set    job names with parked jobs: "{P:q}:lanes", whose
                              "{P:q}:" is the prefix of the keys built here (see
                              keys.py): rate (the queue's rate limit, gcra.lua),
                              running:<job> (ids holding a slot), parked:<job>
                              (list), rate:<job>, held:<job> (a job's hold)

  ARGV[1] job key prefix
  ARGV[2] worker id
  ARGV[3] lease length (ms)
  ARGV[4] max jobs to take (N)
  With limits (none: no more arguments, the hot path stays as short as it was):
  ARGV[5] the queue's concurrency limit (0 = none): at most that many leased at once
  ARGV[6], ARGV[7] the queue's rate limit: interval, tolerance (ms; 0, 0 = none)
  ARGV[8..] groups of 4 per limited job (in this queue): name, concurrency limit
          (0 = none), rate interval and tolerance (ms; 0, 0 = none)

  Limits count leases, so a slot comes back with its lease (recover). A job whose
  limit holds it back is parked (its job's parked list, state still queued, no
  attempt used) and the jobs behind it are looked at: no head-of-line blocking.
  Parked jobs come first once their job may start again. Every end of a run that
  held a slot wakes a worker (free_slot.lua); a rate or a hold makes next_due the
  moment the next start may happen, so nothing polls. A queue with no limits pays
  nothing more than before: its one EXISTS takes held and lanes too (jobs parked
  under a limit since removed from the settings go back to waiting).

  Keyed jobs (limit_by) wait in per-key lanes (lanes.lua), served round robin: a
  lane whose key may start gives one job per turn and goes to the back; one held
  back by its key's limits is parked in the keys zset until it may start (or until
  a slot of its key frees: free_slot.lua), so it never blocks another key. The
  job's limits hold per lane; the queue's hold on top. When unkeyed jobs wait too,
  lanes get half of a call's jobs. A lane's head in backoff (an ordered retry, see
  retry.lua) parks its lane until it is due, so its key's later jobs stay behind.

  No herd: of the workers that take nothing and learn when the next parked key
  may start, two claim that moment ({P:q}:due); other idle workers are told a
  second later (a claimer passes the marker on when it takes the job).

  A key of the wrong type (written by something else) fails the call with
  WRONGTYPE before anything is taken (prepare; a lane's keys: serve_lanes), or,
  once jobs are taken, ends the taking there: never half-way through leasing. The
  caller moves such a key aside (quarantine.lua) and fetches again.

  Returns {next_due, now, job...}: next_due is the ms time the earliest delayed job
  comes due or a held-back job may start (-1 if none), now the server time; each
  job is 9 entries: id, name, args, kwargs, options, attempt, max_attempts,
  enqueued_at, lease number. The lease token a worker must present later is
  "<worker id>#<lease number>": the job's "leases" counter, one more at each lease,
  so a token is never reused, not even after a give-back (release.lua keeps the
  attempt) leases the job to the same worker again.
]]
local rcall = redis.call
-- include: now_ms
-- include: waiting
-- include: lanes
-- include: read_job
-- include: count_field
-- include: promote_due
-- include: gcra
-- include: type_error

-- At most this many jobs are parked per call: a long run of limited jobs is moved
-- aside in steps (the marker passes the rest on to the next fetch).
local PARK_PER_CALL = 1000

local waitingKey, prioritizedKey, scheduledKey, retryingKey, activeKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- The waiting key's type, read once: the old layout (a sorted set) is upgraded, and
-- any other wrong type fails the call here, before anything is taken (a set there
-- used to fail the list's LRANGE after higher-priority jobs were leased, which then
-- sat leased to nobody); the caller moves the key aside (quarantine.lua).
local waitingType = rcall("TYPE", waitingKey)["ok"]
if waitingType == "zset" then
  upgrade_waiting(waitingKey, prioritizedKey)
elseif waitingType ~= "none" and waitingType ~= "list" then
  return redis.error_reply("WRONGTYPE " .. waitingKey .. " holds a " .. waitingType)
end
local markerKey, seqKey, pausedKey, heldKey, lanesKey =
  KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local limitPrefix = string.sub(lanesKey, 1, -6)
local tag, keysKey = string.sub(limitPrefix, 1, -2), limitPrefix .. "keys"
local ringKey = limitPrefix .. "ring"
local jobPrefix, workerId = ARGV[1], ARGV[2]
local leaseMs, wanted = tonumber(ARGV[3]), tonumber(ARGV[4])
local queueConcurrency, queueInterval = tonumber(ARGV[5]) or 0, tonumber(ARGV[6]) or 0
local jobLimits, limited = {}, queueConcurrency > 0 or queueInterval > 0
for i = 8, #ARGV - 3, 4 do
  jobLimits[ARGV[i]] = {concurrency = tonumber(ARGV[i + 1]), interval = tonumber(ARGV[i + 2]),
                        tolerance = tonumber(ARGV[i + 3])}
  limited = true
end
local now = now_ms()
-- A Lua number given to a command is formatted by Redis 7.0 with "%.17g", which
-- costs more than some commands: the per-job ones get strings, made once here.
local nowText, leaseEnd = string.format("%d", now), string.format("%d", now + leaseMs)

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

local function note_due(due)
  if due and (nextDue < 0 or due < nextDue) then nextDue = due end
end
local result = {nextDue, now}
local lanes, keyed = limited, false
if rcall("EXISTS", pausedKey, heldKey, lanesKey, keysKey) > 0 then
  if rcall("EXISTS", pausedKey) == 1 then return result end
  local held = rcall("PTTL", heldKey)
  if held > 0 then
    note_due(now + held)
    result[1] = nextDue
    return result
  end
  lanes = true
  keyed = rcall("EXISTS", keysKey) == 1
end
local queueRate
if queueConcurrency > 0 then
  wanted = math.min(wanted, queueConcurrency - rcall("ZCARD", activeKey))
end
if queueInterval > 0 then
  queueRate = gcra_open(limitPrefix .. "rate", queueInterval, tonumber(ARGV[7]), now)
  local room = gcra_room(queueRate, now)
  if room <= 0 then note_due(gcra_next(queueRate)) end
  wanted = math.min(wanted, room)
end
if wanted <= 0 then
  result[1] = nextDue
  return result
end

-- include: fetch_limits

local parkedNow = 0
local function park(id, name)
  local parkedKey = limitPrefix .. "parked:" .. name
  rcall("RPUSH", parkedKey, id)
  rcall("SADD", lanesKey, name)
  rcall("HSET", jobPrefix .. id, "parked", parkedKey)
  parkedNow = parkedNow + 1
end

-- Lease popped ids. One that holds no job, or a job that is not queued (never
-- expected: every transition out of queued takes its id out of waiting), is
-- dropped, and more are taken in its place, so a short answer always means the
-- queue is empty. ``fromParked``: the caller checked the job's limits already;
-- ``laneState``: ... the limits of the lane it came from, which hold instead.
-- prepare(ids): before ids leave their list or set, check the keys written once
-- jobs are taken: the queue's (once per call), and for the jobs read here, the
-- limits of the limited ones and their parked list. A key of the wrong type fails
-- the call here when nothing is taken yet; later (a further batch, a job of
-- another name), it ends the taking instead (``refused``): the jobs taken so far
-- are returned, nothing half-way, and the next call fails on it. Returns the jobs
-- (false for an id that holds none), for lease; nil when refused.
local checked, refused = false, false
local function check(ids)
  if not checked then
    checked = true
    rcall("ZCARD", activeKey)
    rcall("ZCARD", markerKey)
    -- Read only after parked jobs and lanes were served (the waiting list's type
    -- is read first thing).
    if lanes then rcall("ZCARD", prioritizedKey) end
    if keyed then
      rcall("LLEN", ringKey)
      rcall("ZCARD", keysKey)
    end
  end
  local jobs = {}
  for i, id in ipairs(ids) do
    local job = read_job(jobPrefix .. id, "name", "args", "kwargs", "options", "max_attempts",
                         "enqueued_at", "attempt", "state", "leases")
    jobs[i] = job or false
    local state = job and jobLimits[job[1]] and state_of(job[1])
    if state and not state.parkChecked then
      state.parkChecked = true
      rcall("LLEN", limitPrefix .. "parked:" .. job[1])
    end
  end
  return jobs
end

local taken, poppedAny = 0, false
local function prepare(ids)
  if taken == 0 then return check(ids) end
  local ok, jobs = pcall(check, ids)
  refused = not ok
  return ok and jobs or nil
end

local function lease(ids, fromParked, laneState, prepared)
  poppedAny = true
  for i, id in ipairs(ids) do
    local jobKey = jobPrefix .. id
    local job
    if prepared then
      job = prepared[i] or nil
    else
      job = read_job(jobKey, "name", "args", "kwargs", "options", "max_attempts",
                     "enqueued_at", "attempt", "state", "leases")
    end
    local state = laneState or (job and jobLimits[job[1]] and state_of(job[1]))
    local free, due = true, nil
    if state and not fromParked then free, due = may_start(state) end
    if not free then
      park(id, job[1])
      note_due(due)
    elseif job and (not job[8] or job[8] == "queued") then
      -- Numbers are read defensively: a malformed field must not stop the script.
      local attempt, leaseNumber = count_field(job[7], 0) + 1, count_field(job[9], 0) + 1
      -- Numbers as strings (see nowText): "%d" costs a fifth of Redis' "%.17g".
      local attemptText, leaseText = string.format("%d", attempt), string.format("%d", leaseNumber)
      rcall("HSET", jobKey, "attempt", attemptText, "state", "running", "started_at", nowText,
            "worker", workerId, "leases", leaseText, "lease", workerId .. "#" .. leaseText)
      rcall("ZADD", activeKey, leaseEnd, id)
      if state and state.used then
        rcall("SADD", state.runningKey, id)
        state.used = state.used + 1
        if laneState and state.limit.concurrency == 1 then
          -- One at a time, in order: a retry keeps its place (retry.lua).
          rcall("HSET", jobKey, "slot", state.runningKey, "ordered", 1)
        else
          rcall("HSET", jobKey, "slot", state.runningKey)
        end
      elseif queueConcurrency > 0 then
        rcall("HSET", jobKey, "slot", "queue")
      end
      if state and state.rate then gcra_take(state.rate, now) end
      if queueRate then gcra_take(queueRate, now) end
      if fromParked and not laneState then rcall("HDEL", jobKey, "parked") end
      local n = #result
      result[n + 1] = id
      result[n + 2] = job[1] or ""
      result[n + 3] = job[2] or ""
      result[n + 4] = job[3] or "{}"
      result[n + 5] = job[4] or "{}"
      result[n + 6] = attempt
      result[n + 7] = count_field(job[5], 1)
      result[n + 8] = math.floor(tonumber(job[6]) or 0)
      result[n + 9] = leaseNumber
      taken = taken + 1
    end
  end
end

local function batch() return math.min(wanted - taken, 1000) end
local function more() return taken < wanted and parkedNow < PARK_PER_CALL and not refused end

-- Parked jobs first: they were met before anything still waiting. A lane whose job
-- is no longer limited here goes back to waiting (its settings changed).
if lanes then
  for _, name in ipairs(rcall("SMEMBERS", lanesKey)) do
    local parkedKey = limitPrefix .. "parked:" .. name
    if not jobLimits[name] then
      for _, id in ipairs(rcall("LRANGE", parkedKey, 0, -1)) do
        local job = read_job(jobPrefix .. id, "priority", "state")
        if job then
          rcall("HDEL", jobPrefix .. id, "parked")
          push_waiting(waitingKey, prioritizedKey, seqKey, id, job[1])
        end
      end
      rcall("DEL", parkedKey)
    else
      local state = state_of(name)
      while taken < wanted do
        local free, due = may_start(state)
        if not free then
          note_due(due)
          break
        end
        if not prepare({}) then break end
        local id = rcall("LPOP", parkedKey)
        if not id then break end
        lease({id}, true)
      end
    end
    if rcall("EXISTS", parkedKey) == 0 then rcall("SREM", lanesKey, name) end
  end
end

-- include: fetch_lanes

if keyed and not refused then
  local share = wanted - taken
  if rcall("EXISTS", waitingKey, prioritizedKey) > 0 then
    -- Unkeyed jobs wait too: the lanes get half (one call in two when taking one).
    share = share > 1 and math.ceil(share / 2) or now % 2
  end
  serve_lanes(share)
  if laneRefusal then return laneRefusal end
end

-- Higher priority first: above 0 (the sorted set's low scores), then 0 (the list),
-- then below 0.
local prioritized = rcall("EXISTS", prioritizedKey) == 1
local belowZero = "(" .. string.format("%.0f", PRIORITY_ZERO_SCORE)
-- (Commands as old as Redis 5: ZRANGE BYSCORE and LPOP with a count need 6.2.)
while prioritized and more() do
  local ids = rcall("ZRANGEBYSCORE", prioritizedKey, "-inf", belowZero, "LIMIT", 0, batch())
  if #ids == 0 then break end
  local jobs = prepare(ids)
  if not jobs then break end
  rcall("ZREM", prioritizedKey, unpack(ids))
  lease(ids, false, nil, jobs)
end
while more() do
  local n = batch()
  local ids = rcall("LRANGE", waitingKey, 0, n - 1)
  if #ids == 0 then break end
  local jobs = prepare(ids)
  if not jobs then break end
  rcall("LTRIM", waitingKey, #ids, -1)
  lease(ids, false, nil, jobs)
end
while prioritized and more() do
  local ids = rcall("ZRANGE", prioritizedKey, 0, batch() - 1)
  if #ids == 0 then break end
  local jobs = prepare(ids)
  if not jobs then break end
  rcall("ZREM", prioritizedKey, unpack(ids))
  lease(ids, false, nil, jobs)
end

local laneDue
if keyed then
  if not refused then serve_lanes(wanted - taken) end
  if laneRefusal then return laneRefusal end
  local later = rcall("ZRANGEBYSCORE", keysKey, PARKED_MIN, PARKED_MAX, "WITHSCORES",
                      "LIMIT", 0, 1)
  laneDue = tonumber(later[2])
  note_due(laneDue)
end

if queueRate then gcra_close(queueRate, now) end
for _, states_ in ipairs({states, laneStates}) do
  for _, state in pairs(states_) do
    if state.rate then gcra_close(state.rate, now) end
  end
end
result[1] = nextDue
-- Two idle workers sleep until a parked key may start (the first of them to wake
-- takes its job: one worker late on a busy host does not delay the start), the
-- others a second longer. The claim is "<due> <worker id> [<worker id>]". (A
-- job's or a queue's own rate wakes every idle worker, as before.)
if taken == 0 and nextDue > now and nextDue == laneDue then
  local dueKey, due, me = limitPrefix .. "due", string.format("%.0f", nextDue), " " .. workerId
  local claim = rcall("GET", dueKey)
  if not claim or string.sub(claim, 1, #due + 1) ~= due .. " " then
    rcall("SET", dueKey, due .. me, "PX", math.ceil(nextDue - now) + 1000)
  elseif not string.find(claim .. " ", me .. " ", #due, true) then
    if string.find(claim, " ", #due + 2, true) then
      result[1] = nextDue + 1000
    else
      rcall("SET", dueKey, claim .. me, "PX", math.ceil(nextDue - now) + 1000)
    end
  end
end

-- Pass the wake-up on, so another idle worker joins in when more work is left, or,
-- when this worker took jobs (and may be busy with them when it comes due), learns
-- when the next delayed job is due.
if (taken > 0 and nextDue >= 0)
    or (poppedAny and rcall("EXISTS", waitingKey, prioritizedKey) > 0)
    or (keyed and taken > 0 and rcall("EXISTS", ringKey) == 1) then
  rcall("ZADD", markerKey, 0, "m")
end
return result
