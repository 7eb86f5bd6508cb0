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
local listKey = ARGV[4] .. "purge:" .. string.format("%.0f", cutoff)
if ARGV[5] == "" then
  rcall("DEL", listKey)
  rcall("ZUNIONSTORE", listKey, 1, keysKey, "WEIGHTS", 0)
end
local lane, laneName = cursor_of(""), nil
do
  local score, kept, name = string.match(ARGV[8] or "", "^(%S+) (%d+) (.+)$")
  if name then lane, laneName = cursor_of(score .. " " .. kept), name end
end
while #ids < wanted do
  local name = rcall("ZRANGE", listKey, 0, 0)[1]
  if not name then break end
  if name ~= laneName then lane, laneName = cursor_of(""), name end
  local laneKey = ARGV[4] .. "key:" .. name
  if not take_older(laneKey, lane, ids) then break end
  if rcall("EXISTS", laneKey) == 0 then
    rcall("ZREM", keysKey, name)
    rcall("LREM", ARGV[4] .. "ring", 0, name) -- so a new job's lane joins it once
  end
  rcall("ZREM", listKey, name) -- passed: what it still holds is newer
  lane, laneName = cursor_of(""), nil
end
rcall("EXPIRE", listKey, 3600) -- none once the walk is over
-- The states of a job waiting where the walks look (a keyed job's ordered retry
-- waits in its lane); an id of any other job is stale: dropped, not counted.
local WAITING = {queued = true, scheduled = true, retrying = true}
local tally, cancelled = {}, 0
for _, id in ipairs(ids) do
  local jobKey = jobPrefix .. id
  local job = redis.pcall("HMGET", jobKey, "name", "state")
  if type(job) == "table" and type(job[1]) == "string" and WAITING[job[2]] then
    close_job(jobKey, statsKey, "cancelled", ttl, "finished_at", now)
    -- A step or callback this enqueues is dated 1 ms later: it must be newer than
    -- the cutoff even when the purge began in this very millisecond.
    flow_job_ended(jobKey, id, "cancelled", nil, now + 1)
    tally_add(tally, "finished\t" .. job[1] .. "\tcancelled", 1)
    cancelled = cancelled + 1
  end
end
if cancelled > 0 then
  count_queue(statsKey, now, "cancelled", cancelled)
  tally_write(statsKey, tally)
end
return {#ids, cancelled, cutoff, prioritized[1] .. " " .. prioritized[2],
  scheduled[1] .. " " .. scheduled[2], lane[1] .. " " .. lane[2] .. " " .. (laneName or "")}
