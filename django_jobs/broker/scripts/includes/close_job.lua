-- close_job(jobKey, statsKey, state, ttl, ...): give an ended job its final state (and
-- any extra field/value pairs), keep it readable for ttl seconds, count the state.
local function close_job(jobKey, statsKey, state, ttl, ...)
  rcall("HSET", jobKey, "state", state, ...)
  rcall("EXPIRE", jobKey, ttl)
  rcall("HINCRBY", statsKey, state, 1)
end
