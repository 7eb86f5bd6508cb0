--[[ flow_cancel: a flow -> cancelled. No step or then-callback of it starts after
  this; its finally_ callbacks still run once their members ended. The caller then
  cancels the flow's jobs that have not ended (cancel.lua), each of which reports
  to the flow as its end.

  KEYS[1] flow  hash

  ARGV[1] seconds to keep the flow once cancelled

  Returns the flow's state after the call, or false when it is not stored.
]]
local rcall = redis.call
-- include: now_ms

local flowKey = KEYS[1]
local state = rcall("HGET", flowKey, "state")
if not state then return false end
if state == "succeeded" or state == "failed" or state == "cancelled" then return state end
rcall("HSET", flowKey, "state", "cancelled", "finished_at", now_ms())
-- (Kept while a group with a finally_ waits for a member: flow.lua's flow_expire.)
if (tonumber(rcall("HGET", flowKey, "open")) or 0) <= 0 then rcall("EXPIRE", flowKey, ARGV[1]) end
return "cancelled"
