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
  ARGV[8] lanes of keys passed (left holding only newer jobs); ARGV[9] where the
          walk of the lane after them stands

  A purge ends what was waiting when it began, whatever its number of calls: a job
  enqueued later (by a producer, or a flow's step or finally_ callback enqueued by
  this very purge cancelling a member) is left to run. Lists (waiting, parked) are
  appended to, so their walk stops at the first newer job; sorted sets take newer
  jobs anywhere, so their walk leaves them and carries a cursor to the next call.

  A job of a flow fails its chain or group (includes/flow.lua).

  Returns {jobs purged, cutoff, prioritized cursor, scheduled cursor, lanes passed,
  lane cursor}, to pass back to the next call; fewer than N purged means the queue
  has no more.
]]
local rcall = redis.call
-- include: now_ms
-- include: waiting
-- include: count
-- include: close_job
-- include: lanes
-- include: write_job
-- include: flow

local waitingKey, prioritizedKey, scheduledKey, statsKey, lanesKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
upgrade_waiting(waitingKey, prioritizedKey)
local jobPrefix, wanted, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local cutoff = tonumber(ARGV[5]) or now

local function newer(id)
  return (tonumber(rcall("HGET", jobPrefix .. id, "enqueued_at")) or 0) > cutoff
end

-- take_from_list(key, ids): the list's first jobs up to the first newer one.
local function take_from_list(key, ids)
  local head = rcall("LRANGE", key, 0, wanted - #ids - 1)
  local taken = 0
  for _, id in ipairs(head) do
    if newer(id) then break end
    taken = taken + 1
    ids[#ids + 1] = id
  end
  if taken > 0 then rcall("LTRIM", key, taken, -1) end
end

-- take_older(key, cursor, ids): walk a zset in score order from cursor = {score,
-- kept} (every job below ``score``, and ``kept`` of those at it, are newer ones left
-- by this purge), taking the older jobs into ids until it holds N. Returns whether
-- the walk reached the end.
local function take_older(key, cursor, ids)
  while #ids < wanted do
    local window = rcall("ZRANGEBYSCORE", key, cursor[1], "+inf", "WITHSCORES",
      "LIMIT", cursor[2], wanted - #ids)
    if #window == 0 then return true end
    local older = {}
    for i = 1, #window, 2 do
      if window[i + 1] ~= cursor[1] then cursor[1], cursor[2] = window[i + 1], 0 end
      if newer(window[i]) then
        cursor[2] = cursor[2] + 1
      else
        older[#older + 1] = window[i]
        ids[#ids + 1] = window[i]
      end
    end
    if #older > 0 then rcall("ZREM", key, unpack(older)) end
  end
  return false
end

local function cursor_of(text)
  local score, kept = string.match(text or "", "^(%S+) (%d+)$")
  if not tonumber(score) then return {"-inf", 0} end
  return {score, tonumber(kept)}
end

local ids = {}
take_from_list(waitingKey, ids)
local prioritized, scheduled = cursor_of(ARGV[6]), cursor_of(ARGV[7])
take_older(prioritizedKey, prioritized, ids)
take_older(scheduledKey, scheduled, ids)
for _, name in ipairs(rcall("SMEMBERS", lanesKey)) do
  if #ids >= wanted then break end
  local parkedKey = ARGV[4] .. "parked:" .. name
  take_from_list(parkedKey, ids)
  if rcall("EXISTS", parkedKey) == 0 then rcall("SREM", lanesKey, name) end
end
local keysKey = ARGV[4] .. "keys"
local passed, lane = tonumber(ARGV[8]) or 0, cursor_of(ARGV[9])
while #ids < wanted do
  local name = rcall("ZRANGE", keysKey, passed, passed)[1]
  if not name then break end
  local laneKey = ARGV[4] .. "key:" .. name
  if not take_older(laneKey, lane, ids) then break end
  if rcall("EXISTS", laneKey) == 0 then
    rcall("ZREM", keysKey, name)
    rcall("LREM", ARGV[4] .. "ring", 0, name) -- so a new job's lane joins it once
  else
    passed = passed + 1 -- it holds newer jobs only
  end
  lane = cursor_of("")
end
local tally = {}
for _, id in ipairs(ids) do
  local jobKey = jobPrefix .. id
  local name = redis.pcall("HGET", jobKey, "name")
  if type(name) == "string" then
    close_job(jobKey, statsKey, "cancelled", ttl, "finished_at", now)
    -- A step or callback this enqueues is dated 1 ms later: it must be newer than
    -- the cutoff even when the purge began in this very millisecond.
    flow_job_ended(jobKey, id, "cancelled", nil, now + 1)
    tally_add(tally, "finished\t" .. name .. "\tcancelled", 1)
  end
end
if #ids > 0 then
  count_queue(statsKey, now, "cancelled", #ids)
  tally_write(statsKey, tally)
end
return {#ids, cutoff, prioritized[1] .. " " .. prioritized[2],
  scheduled[1] .. " " .. scheduled[2], passed, lane[1] .. " " .. lane[2]}
