-- close_job(jobKey, statsKey, state, ttl, ...): give an ended job its final state (and
-- any extra field/value pairs) and keep it readable for ttl seconds. Needs count.
local function close_job(jobKey, statsKey, state, ttl, ...)
  rcall("HSET", jobKey, "state", state, ...)
  rcall("EXPIRE", jobKey, ttl)
end
