--[[ step: a running job stores the result of one durable step (context.step), so
  a later attempt of the job replays it instead of running the step again.

  KEYS[1] job  hash

  ARGV[1] lease token ("<worker id>#<lease number>", see fetch.lua)
  ARGV[2] the step's field ("step:<name>")
  ARGV[3] the step's result (JSON, checked by the caller)

  Returns the step's record, JSON {"attempt": n, "stored_at": ms, "result": ...}:
  the one written now, or the one already stored (the first result of a step is
  its result); -1 when the lease was lost (nothing is changed: the attempt that
  owns the job now, or the next one, runs the step itself).
]]
local rcall = redis.call
-- include: now_ms

local jobKey = KEYS[1]
local held = rcall("HMGET", jobKey, "lease", "attempt")
if held[1] ~= ARGV[1] then return -1 end
local stored = rcall("HGET", jobKey, ARGV[2])
if stored then return stored end
local record = '{"attempt":' .. (tonumber(held[2]) or 0) .. ',"stored_at":' .. now_ms() ..
  ',"result":' .. ARGV[3] .. '}'
rcall("HSET", jobKey, ARGV[2], record)
return record
