-- Part of fetch.lua, included where its locals and functions (keysKey, ringKey,
-- lease, prepare, lane_state, ...) are defined: serving the per-key lanes of
-- limit_by jobs (lanes.lua) round robin.
--
-- serve_lane(lane): one turn of a lane: lease its head if its key may start (the
-- lane goes back to the end of the ring), else park it until it may. Returns
-- whether the lane is in the ring again.
local function serve_lane(lane)
  local laneKey = limitPrefix .. "key:" .. lane
  local head = rcall("ZRANGE", laneKey, 0, 0)[1]
  if not head then
    rcall("ZREM", keysKey, lane)
    return false
  end
  local jobKey = jobPrefix .. head
  local job = read_job(jobKey, "name", "state", "run_at")
  if not job or (job[2] ~= "queued" and job[2] ~= "retrying") then
    rcall("ZREM", laneKey, head) -- not a queued job (never expected): dropped
    rcall("RPUSH", ringKey, lane)
    return true
  end
  if job[2] == "retrying" then
    local at = tonumber(job[3]) or 0
    if at > now then
      rcall("ZADD", keysKey, string.format("%.0f", at), lane)
      parkedNow = parkedNow + 1
      return false
    end
    rcall("HSET", jobKey, "state", "queued")
  end
  local state = lane_state(lane, job[1])
  local free, due = may_start(state)
  if not free then
    rcall("ZADD", keysKey, due and string.format("%.0f", due) or SLOT_WAIT_TEXT, lane)
    parkedNow = parkedNow + 1
    return false
  end
  rcall("ZREM", laneKey, head)
  lease({head}, true, state)
  if rcall("EXISTS", laneKey) == 1 then
    rcall("RPUSH", ringKey, lane)
    return true
  end
  rcall("ZREM", keysKey, lane)
  return false
end

-- serve_lanes(budget): up to ``budget`` more jobs from the ring, one per turn.
-- Parked lanes whose time has come join the end of the ring first.
local laneRefusal
local function serve_lanes(budget)
  if not prepare({}) then return end
  for _, lane in ipairs(rcall("ZRANGEBYSCORE", keysKey, PARKED_MIN, now, "LIMIT", 0, 1000)) do
    lane_ready(tag, lane)
  end
  local stop = math.min(wanted, taken + budget)
  local turns = rcall("LLEN", ringKey)
  while taken < stop and turns > 0 and parkedNow < PARK_PER_CALL do
    turns = turns - 1
    local lane = rcall("LPOP", ringKey)
    if not lane then break end
    -- (An entry of a lane parked since it joined the ring is skipped.)
    if tonumber(rcall("ZSCORE", keysKey, lane)) == IN_RING then
      -- A lane's own keys are first read before anything of it is written: one of
      -- the wrong type puts the lane back and ends the turns (prepare).
      local ok, again = pcall(serve_lane, lane)
      if not ok then
        rcall("LPUSH", ringKey, lane)
        refused = true
        if taken == 0 then
          laneRefusal = type_error(limitPrefix .. "key:" .. lane, "zset")
            or type_error(limitPrefix .. "krun:" .. lane, "set")
            or type_error(limitPrefix .. "krate:" .. lane, "string")
            or redis.error_reply(type(again) == "table" and again.err or tostring(again))
        end
        return
      end
      if again then turns = turns + 1 end -- at the end of the ring again: one more turn
    end
  end
end
