-- promote_due(fromKey, waitingKey, prioritizedKey, seqKey, jobPrefix, now, limit): move
-- jobs whose time has come from a scheduled/retrying zset into waiting, keeping
-- priority order. A member whose job hash is gone is dropped (it can never run).
-- A keyed job goes back to its lane at its old place. Needs waiting, lanes, read_job.
local function promote_due(fromKey, waitingKey, prioritizedKey, seqKey, jobPrefix, now, limit)
  local due = rcall("ZRANGEBYSCORE", fromKey, "-inf", now, "LIMIT", 0, limit)
  if #due == 0 then return 0 end
  for _, id in ipairs(due) do
    local jobKey = jobPrefix .. id
    local job = read_job(jobKey, "priority", "state", "lane", "lscore")
    if job then
      requeue(waitingKey, prioritizedKey, seqKey, jobKey, id, job[1], job[3], job[4])
      rcall("HSET", jobKey, "state", "queued")
    end
    rcall("ZREM", fromKey, id)
  end
  return #due
end
