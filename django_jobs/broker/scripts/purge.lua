--[[ purge: queued (waiting, parked by a limit, or in a key's lane) and scheduled -> cancelled, for up to N jobs of one queue (an
  operator empties a queue). Each job ends cancelled and stays readable for the
  result TTL, so none disappears without a final state.

  KEYS[1] waiting      list   ready jobs of priority 0
  KEYS[2] prioritized  zset   ready jobs of any other priority
  KEYS[3] scheduled    zset   delayed jobs
  KEYS[4] stats        hash   counters (see count.lua)
  KEYS[5] lanes        set    job names with parked jobs (see fetch.lua)

  ARGV[1] job key prefix
  ARGV[2] max jobs to purge in this call (N)
  ARGV[3] seconds to keep each purged job
  ARGV[4] prefix of the per-job keys ("{P:q}:", see fetch.lua); also of the
          per-key lanes (lanes.lua), which are emptied too

  ARGV[5] cutoff: the purge ends only jobs enqueued at or before this Redis time
          (ms); "" in its first call, which takes now
  ARGV[6] where the walk of the prioritized zset stands: "<score> <kept>" ("" to
          start), see take_older; ARGV[7] the same for scheduled
  ARGV[8] where the walk of the per-key lanes stands: "<score> <kept> <lane>" ("" to
          start), the lane's walk as take_older's (see ARGV[6]), for the first lane
          left, by name, in the purge's list of lanes (below)

  Per-key lanes are walked by name, not by their place in {P:q}:keys (which moves as
  lanes are parked, added and emptied between calls, so an index would skip lanes or
  visit them twice): the first call copies the lanes' names into
  "{P:q}:purge:<cutoff>" (a zset, every score 0, so in name order; it expires an
  hour after the last call, and goes when the walk ends) and each lane leaves it
  once passed. A lane that first appears during the purge holds jobs enqueued later
  (or a delayed job that came due meanwhile, as in a list): it is left.

  A purge ends what was waiting when it began, whatever its number of calls: a job
  enqueued later (by a producer, or a flow's step or finally_ callback enqueued by
  this very purge cancelling a member) is left to run. Lists (waiting, parked) are
  appended to, so their walk stops at the first newer job; sorted sets take newer
  jobs anywhere, so their walk leaves them and carries a cursor to the next call.

  A job of a flow fails its chain or group (includes/flow.lua).

  It writes nothing before it has read every key it will write (includes/
  type_error.lua): Redis keeps what a script wrote before a command failed, so a
  key of the wrong type met half-way (a lane's, say) used to leave the jobs
  already taken queued in no set, never run and never cancelled. It first plans
  (reads only: what each walk takes, the jobs and their flows), then writes. A key
  of the wrong type ends the call with a WRONGTYPE error naming it, nothing
  changed (the first call's own lane list deleted again); the caller moves it
  aside and calls again (quarantine.py).

  Returns {ids taken, jobs cancelled, cutoff, prioritized cursor, scheduled cursor,
  lane cursor}, the last four to pass back to the next call. Ids taken counts every
  id removed from the queue (fewer than N means it has no more); jobs cancelled only
  those whose job was still stored and waiting (queued, scheduled, or a keyed
  job's ordered retry in its lane): a stale id (its job expired, or ended by
  another path) is removed, but not counted.
]]
local rcall = redis.call
-- include: now_ms
-- include: waiting
-- include: count
-- include: type_error
-- include: count_type_error
-- include: close_job
-- include: lanes
-- include: write_job
-- include: flow

local waitingKey, prioritizedKey, scheduledKey, statsKey, lanesKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jobPrefix, wanted, ttl, tag = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local keysKey, ringKey = tag .. "keys", tag .. "ring"
local now = now_ms()
local cutoff = tonumber(ARGV[5]) or now
local listKey = tag .. "purge:" .. string.format("%.0f", cutoff)

-- The queue's own keys, before upgrade_waiting (which writes two of them).
local wrong = type_error(prioritizedKey, "zset") or type_error(scheduledKey, "zset")
  or type_error(lanesKey, "set") or type_error(keysKey, "zset") or type_error(ringKey, "list")
  or type_error(listKey, "zset") or count_type_error(statsKey, now)
if not wrong and rcall("TYPE", waitingKey)["ok"] ~= "zset" then
  wrong = type_error(waitingKey, "list")
end
if wrong then return wrong end
upgrade_waiting(waitingKey, prioritizedKey)

-- A job hash of another type is no job: taken as older, then dropped as stale.
local function newer(id)
  local at = redis.pcall("HGET", jobPrefix .. id, "enqueued_at")
  return type(at) == "string" and (tonumber(at) or 0) > cutoff
end

-- plan_list(key, ids): how many of the list's first jobs, up to the first newer
-- one, the purge takes (added to ids; the caller trims them off).
local function plan_list(key, ids)
  if #ids >= wanted then return 0 end
  local taken = 0
  for _, id in ipairs(rcall("LRANGE", key, 0, wanted - #ids - 1)) do
    if newer(id) then break end
    taken = taken + 1
    ids[#ids + 1] = id
  end
  return taken
end

-- plan_older(key, cursor, ids): walk a zset in score order from cursor = {score,
-- kept} (every job below ``score``, and ``kept`` of those at it, are newer ones left
-- by this purge), taking the older jobs into ids until it holds N. Returns whether
-- the walk reached the end, and the ids it took (the caller removes them; until
-- then the window skips those taken at the cursor's score too).
local function plan_older(key, cursor, ids)
  local older, takenAt = {}, 0
  while #ids < wanted do
    local window = rcall("ZRANGEBYSCORE", key, cursor[1], "+inf", "WITHSCORES",
      "LIMIT", cursor[2] + takenAt, wanted - #ids)
    if #window == 0 then return true, older end
    for i = 1, #window, 2 do
      if window[i + 1] ~= cursor[1] then cursor[1], cursor[2], takenAt = window[i + 1], 0, 0 end
      if newer(window[i]) then
        cursor[2] = cursor[2] + 1
      else
        takenAt = takenAt + 1
        older[#older + 1] = window[i]
        ids[#ids + 1] = window[i]
      end
    end
  end
  return false, older
end

local function cursor_of(text)
  local score, kept = string.match(text or "", "^(%S+) (%d+)$")
  if not tonumber(score) then return {"-inf", 0} end
  return {score, tonumber(kept)}
end

-- Plan: reads only, but for the first call's lane list (its own key).
local ids = {}
local fromWaiting = plan_list(waitingKey, ids)
local prioritized, scheduled = cursor_of(ARGV[6]), cursor_of(ARGV[7])
local _, fromPrioritized = plan_older(prioritizedKey, prioritized, ids)
local _, fromScheduled = plan_older(scheduledKey, scheduled, ids)
local parked = {} -- {key, name, taken}
for _, name in ipairs(rcall("SMEMBERS", lanesKey)) do
  if #ids >= wanted then break end
  local parkedKey = tag .. "parked:" .. name
  local bad = type_error(parkedKey, "list")
  if bad then return bad end
  parked[#parked + 1] = {parkedKey, name, plan_list(parkedKey, ids)}
end
if ARGV[5] == "" then
  rcall("DEL", listKey)
  rcall("ZUNIONSTORE", listKey, 1, keysKey, "WEIGHTS", 0)
  rcall("EXPIRE", listKey, 3600) -- at once: nothing may leave it without a TTL
end
local lane, laneName = cursor_of(""), nil
do
  local score, kept, name = string.match(ARGV[8] or "", "^(%S+) (%d+) (.+)$")
  if name then lane, laneName = cursor_of(score .. " " .. kept), name end
end
local walked = {} -- {lane key, name, ids taken, passed}
local at = 0
while #ids < wanted do
  local name = rcall("ZRANGE", listKey, at, at)[1]
  if not name then break end
  if name ~= laneName then lane, laneName = cursor_of(""), name end
  local laneKey = tag .. "key:" .. name
  local bad = type_error(laneKey, "zset")
  if bad then
    if ARGV[5] == "" then rcall("DEL", listKey) end -- the next call begins anew
    return bad
  end
  local passed, older = plan_older(laneKey, lane, ids)
  walked[#walked + 1] = {laneKey, name, older, passed}
  if not passed then break end
  lane, laneName, at = cursor_of(""), nil, at + 1 -- passed: what it still holds is newer
end
-- The states of a job waiting where the walks look (a keyed job's ordered retry
-- waits in its lane); an id of any other job is stale: dropped, not counted.
local WAITING = {queued = true, scheduled = true, retrying = true}
local ending, seen = {}, {} -- {job key, id, name} of each job to cancel, once
for _, id in ipairs(ids) do
  local jobKey = jobPrefix .. id
  local job = redis.pcall("HMGET", jobKey, "name", "state")
  if type(job) == "table" and type(job[1]) == "string" and WAITING[job[2]] and not seen[id] then
    seen[id] = true
    local bad = flow_type_error(jobKey, id, "cancelled", now + 1)
    if bad then
      if ARGV[5] == "" then rcall("DEL", listKey) end
      return bad
    end
    ending[#ending + 1] = {jobKey, id, job[1]}
  end
end

-- Write: every key above has been read, so no command below meets a wrong type.
if fromWaiting > 0 then rcall("LTRIM", waitingKey, fromWaiting, -1) end
if #fromPrioritized > 0 then rcall("ZREM", prioritizedKey, unpack(fromPrioritized)) end
if #fromScheduled > 0 then rcall("ZREM", scheduledKey, unpack(fromScheduled)) end
for _, list in ipairs(parked) do
  if list[3] > 0 then rcall("LTRIM", list[1], list[3], -1) end
  if rcall("EXISTS", list[1]) == 0 then rcall("SREM", lanesKey, list[2]) end
end
for _, walk in ipairs(walked) do
  if #walk[3] > 0 then rcall("ZREM", walk[1], unpack(walk[3])) end
  if walk[4] then
    if rcall("EXISTS", walk[1]) == 0 then
      rcall("ZREM", keysKey, walk[2])
      rcall("LREM", ringKey, 0, walk[2]) -- so a new job's lane joins it once
    end
    rcall("ZREM", listKey, walk[2])
  end
end
rcall("EXPIRE", listKey, 3600) -- an hour after the last call; none once the walk is over
local tally = {}
for _, job in ipairs(ending) do
  close_job(job[1], statsKey, "cancelled", ttl, "finished_at", now)
  -- A step or callback this enqueues is dated 1 ms later: it must be newer than
  -- the cutoff even when the purge began in this very millisecond.
  flow_job_ended(job[1], job[2], "cancelled", nil, now + 1)
  tally_add(tally, "finished\t" .. job[3] .. "\tcancelled", 1)
end
if #ending > 0 then
  count_queue(statsKey, now, "cancelled", #ending)
  tally_write(statsKey, tally)
end
return {#ids, #ending, cutoff, prioritized[1] .. " " .. prioritized[2],
  scheduled[1] .. " " .. scheduled[2], lane[1] .. " " .. lane[2] .. " " .. (laneName or "")}
