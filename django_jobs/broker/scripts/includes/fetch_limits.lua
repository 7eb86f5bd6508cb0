-- Part of fetch.lua, included where its locals (activeKey, now, jobLimits,
-- limitPrefix) are defined: the state of the limits it enforces.
--
-- What holds back each limited job, read once per call: slots in use (a member
-- whose lease is gone from active, never expected as every end of a run frees its
-- slot, is dropped, so a slot cannot leak), its rate, a hold (RateLimited).
local function slots_used(runningKey, concurrency)
  local used = rcall("SCARD", runningKey)
  if used >= concurrency then
    for _, id in ipairs(rcall("SMEMBERS", runningKey)) do
      if not rcall("ZSCORE", activeKey, id) then
        rcall("SREM", runningKey, id)
        used = used - 1
      end
    end
  end
  return used
end

-- open_limits(limit, runningKey, rateKey): the slots used and the rate of a job's
-- or a lane's limits, as they stand now.
local function open_limits(limit, runningKey, rateKey)
  local state = {limit = limit}
  if limit.concurrency > 0 then
    state.runningKey, state.used = runningKey, slots_used(runningKey, limit.concurrency)
  end
  if limit.interval > 0 then
    state.rate = gcra_open(rateKey, limit.interval, limit.tolerance, now)
  end
  return state
end

local states = {}
local function state_of(name)
  local state = states[name]
  if state then return state end
  state = open_limits(jobLimits[name], limitPrefix .. "running:" .. name, limitPrefix .. "rate:" .. name)
  local held = rcall("PTTL", limitPrefix .. "held:" .. name)
  if held > 0 then state.heldUntil = now + held end
  states[name] = state
  return state
end

-- A lane's limits are its job's, counted per lane.
local NO_LIMIT = {concurrency = 0, interval = 0, tolerance = 0}
local laneStates = {}
local function lane_state(lane, name)
  local state = laneStates[lane]
  if state then return state end
  state = open_limits(jobLimits[name] or NO_LIMIT, limitPrefix .. "krun:" .. lane,
                      limitPrefix .. "krate:" .. lane)
  state.lane = lane
  laneStates[lane] = state
  return state
end

-- may_start(state): true, or false and when it may (nil: when a slot frees).
local function may_start(state)
  if state.heldUntil then return false, state.heldUntil end
  if state.used and state.used >= state.limit.concurrency then return false, nil end
  if state.rate and not gcra_allows(state.rate, now) then return false, gcra_next(state.rate) end
  return true
end
