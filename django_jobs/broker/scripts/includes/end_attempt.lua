-- attempt_held(jobKey, token, ...): the job's {lease, ...fields} when the caller
-- still holds its lease; false when it does not (it expired and the job was taken
-- back), so a stale worker can never move a job it does not own; a type_error
-- (type_error.lua) when the job's key is not a hash, before anything is written.
local function attempt_held(jobKey, token, ...)
  local held = redis.pcall("HMGET", jobKey, "lease", ...)
  if held.err then return type_error(jobKey, "hash") or held end
  return held[1] == token and held
end

-- end_attempt(held, jobKey, entry, now, ...): close the current attempt of a job
-- whose attempt_held(jobKey, token, "history", "name", "started_at", "slot") was
-- ``held`` (the caller takes it out of the active set). Releases the lease, appends the attempt to the
-- job's JSON history (``entry`` is a JSON object without its closing brace,
-- finished here with the server's clock), and returns the job's {name, started_at,
-- slot}: for the counters, and the concurrency slot the run held, if any, for
-- free_slot. Extra field/value pairs (the job's next state) are written in the
-- same HSET.
local function end_attempt(held, jobKey, entry, now, ...)
  local record = entry .. ',"finished_at":' .. now .. '}'
  local history = held[2]
  if history then
    history = string.sub(history, 1, -2) .. "," .. record .. "]"
  else
    history = "[" .. record .. "]"
  end
  rcall("HSET", jobKey, "history", history, "finished_at", now, ...)
  rcall("HDEL", jobKey, "lease", "worker", "slot")
  return {held[3] or "", held[4], held[5]}
end
