-- flow_target_error(q, lane, now): type_error for the keys flow.lua's flow_write
-- may write a step or callback of a flow with in its queue, at ``now``: ``q`` are
-- that queue's keys as the flow's "q:<queue>" field lists them (job prefix,
-- waiting, prioritized, scheduled, marker, seq, stats), ``lane`` the job's lane
-- ("" for none; lanes.lua). Every key a job of that queue may go to, whatever its
-- priority or delay, so one check covers a queue (and a lane). Needs type_error,
-- count_enqueued, lanes.
local function flow_target_error(q, lane, now)
  local quarter = q[7] .. ":e:" .. string.format("%d", math.floor(now / QUARTER_MS))
  local wrong = type_error(q[3], "zset") or type_error(q[4], "zset") or type_error(q[5], "zset")
    or type_error(q[6], "string") or type_error(q[7], "hash") or type_error(quarter, "hash")
  -- (A sorted set at waiting is an earlier build's layout: upgrade_waiting folds it in.)
  if not wrong and rcall("TYPE", q[2])["ok"] ~= "zset" then wrong = type_error(q[2], "list") end
  if wrong or lane == "" then return wrong end
  local tag = queue_tag(q[1])
  return type_error(tag .. ":keys", "zset") or type_error(tag .. ":ring", "list")
    or type_error(tag .. ":key:" .. lane, "zset")
end
