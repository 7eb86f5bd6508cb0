-- end_attempt(jobKey, activeKey, id, token, entry, now, ...): close the current attempt.
-- Returns false when the caller no longer holds the lease (it expired and the job was
-- taken back), so a stale worker can never move a job it does not own. Otherwise
-- releases the lease, appends the attempt to the job's JSON history (``entry`` is a
-- JSON object without its closing brace, finished here with the server's clock), and
-- returns the job's {name, started_at, slot}: for the counters, and the concurrency
-- slot the run held, if any, for free_slot.
-- Extra field/value pairs (the job's next state) are written in the same HSET.
local function end_attempt(jobKey, activeKey, id, token, entry, now, ...)
  local held = rcall("HMGET", jobKey, "lease", "history", "name", "started_at", "slot")
  if held[1] ~= token then return false end
  rcall("ZREM", activeKey, id)
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
