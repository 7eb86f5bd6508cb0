-- wait_until(jobKey, retryingKey, markerKey, id, runAt): a job whose state the
-- caller set to "retrying" waits until ``runAt`` (ms, Redis' clock). An ordered
-- keyed job goes back to the head of its lane and parks its key until then (its
-- key's order holds); any other waits in the retrying set. Idle workers are told,
-- so one sleeps until then. Needs the lanes include.
local function wait_until(jobKey, retryingKey, markerKey, id, runAt)
  local keyed = rcall("HMGET", jobKey, "lane", "ordered", "lscore", "priority")
  if keyed[1] and keyed[2] then
    local tag = queue_tag(jobKey)
    lane_enter(tag, keyed[1], id, keyed[3] or lane_score(tag, keyed[4]))
    lane_park(tag, keyed[1], runAt)
  else
    rcall("ZADD", retryingKey, runAt, id)
  end
  rcall("ZADD", markerKey, 0, "m")
end
