--[[ flow_built: every job a flow starts with is stored (in Redis, or in the outbox
  of a committed transaction): the flow, written "building" with a TTL so that a
  producer that died half-way leaves nothing forever, is kept from now on.

  KEYS[1] flow  hash

  While building, the flow already moves on as its jobs end (includes/flow.lua
  leaves the state "building"): this sets it to running, or held when a member
  died meanwhile. A flow that ended meanwhile keeps its state and the expiry its
  end gave it (flow_expire), unless a group's finally_ still waits for a member.

  Returns the flow's state after the call, or false when it is not stored (it
  expired before its jobs were all written: they run as plain jobs).
]]
local rcall = redis.call
local flowKey = KEYS[1]
local state = rcall("HGET", flowKey, "state")
if not state then return false end
if state == "building" then
  state = (tonumber(rcall("HGET", flowKey, "dead")) or 0) > 0 and "held" or "running"
  rcall("HSET", flowKey, "state", state)
end
local ended = state == "succeeded" or state == "failed" or state == "cancelled"
if not ended or (tonumber(rcall("HGET", flowKey, "open")) or 0) > 0 then
  rcall("PERSIST", flowKey)
end
return state
