-- ended_type_error(slot, markerKey, jobKey, id, lane): type_error for the keys the
-- end of a run writes besides its queue's own: those free_slot writes for a run
-- that held ``slot`` (its running set, the marker, and for a lane's slot the
-- lane's index and ring), those a job going back to ``lane`` writes (lanes.lua;
-- nil: none), and the flow hash flow_job_ended writes for a flow's member (its
-- "flow" option, as flow.lua reads it; what the flow's next step writes in its own
-- queue is not checked here). Needs type_error.
local function ended_type_error(slot, markerKey, jobKey, id, lane)
  local wrong = slot and type_error(markerKey, "zset")
  if not wrong and slot and slot ~= "queue" then
    wrong = type_error(slot, "set")
    local tagEnd, laneAt = string.find(slot, "}:krun:", 1, true)
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
  if wrong or not string.find(id, "-", 1, true) then return wrong or nil end
  local options = rcall("HGET", jobKey, "options")
  local flow = options and string.match(options, '"flow":"([^"#]+)#')
  return flow and type_error(flow, "hash") or nil
end
