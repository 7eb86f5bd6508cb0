-- free_slot(slot, id, markerKey): a run that held a concurrency slot ended (``slot``
-- is the job's "slot" field as fetch.lua set it: a running set, or "queue" when
-- only its queue's limit counted it, from the active set). Gives the slot back and
-- wakes an idle worker to use it: one held back by the limit sleeps until then.
local function free_slot(slot, id, markerKey)
  if not slot then return end
  if slot ~= "queue" then rcall("SREM", slot, id) end
  rcall("ZADD", markerKey, 0, "m")
end
