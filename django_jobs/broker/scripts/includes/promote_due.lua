-- promote_due(fromKey, waitingKey, prioritizedKey, seqKey, jobPrefix, now, limit): move
-- jobs whose time has come from a scheduled/retrying zset into waiting, keeping
-- priority order. A member whose job hash is gone is dropped (it can never run).
-- Needs waiting and read_job.
local function promote_due(fromKey, waitingKey, prioritizedKey, seqKey, jobPrefix, now, limit)
  local due = rcall("ZRANGEBYSCORE", fromKey, "-inf", now, "LIMIT", 0, limit)
  if #due == 0 then return 0 end
  for _, id in ipairs(due) do
    local jobKey = jobPrefix .. id
    local job = read_job(jobKey, "priority", "state")
    if job then
      push_waiting(waitingKey, prioritizedKey, seqKey, id, job[1])
      rcall("HSET", jobKey, "state", "queued")
    end
    rcall("ZREM", fromKey, id)
  end
  return #due
end
