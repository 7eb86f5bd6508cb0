-- ended_type_error(slot, markerKey, jobKey, lane): type_error for the keys the end
-- of a run writes besides its queue's own: those free_slot writes for a run that
-- held ``slot`` (its running set, the marker, and for a lane's slot the lane's
-- index and ring), and those a job going back to ``lane`` writes (lanes.lua; nil:
-- none). (A flow member's end also writes its flow: flow.lua's flow_type_error.)
-- Needs type_error.
local function ended_type_error(slot, markerKey, jobKey, lane)
  local wrong = slot and type_error(markerKey, "zset")
  if not wrong and slot and slot ~= "queue" then
    wrong = type_error(slot, "set")
    local tagEnd = string.find(slot, "}:krun:", 1, true)
    if not wrong and tagEnd then
      wrong = type_error(string.sub(slot, 1, tagEnd) .. ":keys", "zset")
        or type_error(string.sub(slot, 1, tagEnd) .. ":ring", "list")
    end
  end
  if not wrong and lane then
    local tag = string.sub(jobKey, 1, (string.find(jobKey, "}", 1, true)))
    wrong = type_error(tag .. ":keys", "zset") or type_error(tag .. ":ring", "list")
      or type_error(tag .. ":key:" .. lane, "zset")
  end
  return wrong or nil
end
