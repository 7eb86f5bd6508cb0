-- free_slot(slot, id, markerKey): a run that held a concurrency slot ended (``slot``
-- is the job's "slot" field as fetch.lua set it: a running set, or "queue" when
-- only its queue's limit counted it, from the active set). Gives the slot back and
-- wakes an idle worker to use it: one held back by the limit sleeps until then. A
-- lane's slot (".../krun:<lane>", lanes.lua) also unparks the lane when it waited
-- for a slot: it takes its turn at the end of the ring.
local function free_slot(slot, id, markerKey)
  if not slot then return end
  if slot ~= "queue" then
    rcall("SREM", slot, id)
    local tagEnd, laneAt = string.find(slot, "}:krun:", 1, true)
    if tagEnd then
      local tag, lane = string.sub(slot, 1, tagEnd), string.sub(slot, laneAt + 1)
      -- 4e15: lanes.lua's SLOT_WAIT, the score of a lane waiting for a slot.
      if (tonumber(rcall("ZSCORE", tag .. ":keys", lane)) or 0) >= 4000000000000000 then
        rcall("ZADD", tag .. ":keys", 0, lane)
        rcall("RPUSH", tag .. ":ring", lane)
      end
    end
  end
  rcall("ZADD", markerKey, 0, "m")
end
