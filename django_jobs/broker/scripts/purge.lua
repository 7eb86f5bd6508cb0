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

  A job of a flow fails its chain or group (includes/flow.lua).

  Returns how many jobs were purged; fewer than N means the queue has no more.
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
local ids = rcall("LRANGE", waitingKey, 0, wanted - 1)
rcall("LTRIM", waitingKey, #ids, -1)
for _, key in ipairs({prioritizedKey, scheduledKey}) do
  if #ids < wanted then
    local more = rcall("ZRANGE", key, 0, wanted - #ids - 1)
    if #more > 0 then
      rcall("ZREM", key, unpack(more))
      for _, id in ipairs(more) do ids[#ids + 1] = id end
    end
  end
end
for _, name in ipairs(rcall("SMEMBERS", lanesKey)) do
  if #ids >= wanted then break end
  local parkedKey = ARGV[4] .. "parked:" .. name
  local more = rcall("LRANGE", parkedKey, 0, wanted - #ids - 1)
  rcall("LTRIM", parkedKey, #more, -1)
  if rcall("EXISTS", parkedKey) == 0 then rcall("SREM", lanesKey, name) end
  for _, id in ipairs(more) do ids[#ids + 1] = id end
end
local keysKey = ARGV[4] .. "keys"
while #ids < wanted do
  local lane = rcall("ZRANGE", keysKey, 0, 0)[1]
  if not lane then break end
  local laneKey = ARGV[4] .. "key:" .. lane
  local more = rcall("ZRANGE", laneKey, 0, wanted - #ids - 1)
  if #more > 0 then rcall("ZREM", laneKey, unpack(more)) end
  if rcall("EXISTS", laneKey) == 0 then
    rcall("ZREM", keysKey, lane)
    rcall("LREM", ARGV[4] .. "ring", 0, lane) -- so a new job's lane joins it once
  end
  for _, id in ipairs(more) do ids[#ids + 1] = id end
end
local tally = {}
for _, id in ipairs(ids) do
  local jobKey = jobPrefix .. id
  local name = redis.pcall("HGET", jobKey, "name")
  if type(name) == "string" then
    close_job(jobKey, statsKey, "cancelled", ttl, "finished_at", now)
    flow_job_ended(jobKey, id, "cancelled", nil, now)
    tally_add(tally, "finished\t" .. name .. "\tcancelled", 1)
  end
end
if #ids > 0 then
  count_queue(statsKey, now, "cancelled", #ids)
  tally_write(statsKey, tally)
end
return #ids
