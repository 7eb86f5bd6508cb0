-- include: job_fields
-- write_job(jobPrefix, waitingKey, prioritizedKey, scheduledKey, seqKey, job, now):
-- store one new job as queued, or as scheduled when it is due later. ``job`` holds
-- one job's 9 fields in enqueue.lua's order, then its lane (job[10]: "" or nil for
-- none; see lanes.lua). Returns "queued", "scheduled", or "exists" when a job with
-- that id is already stored (nothing is written then). Needs waiting and lanes.
local function write_job(jobPrefix, waitingKey, prioritizedKey, scheduledKey, seqKey, job, now)
  local id, priority = job[1], job[6]
  local jobKey = jobPrefix .. id
  if rcall("EXISTS", jobKey) == 1 then return "exists" end
  local runAt = tonumber(job[8])
  local delay = tonumber(job[9])
  if delay > 0 then runAt = now + delay end
  local fields = job_fields(job[2], job[3], job[4], job[5], job[7], priority, now)
  local lane = job[10]
  if lane and lane ~= "" then
    fields[#fields + 1] = "lane"; fields[#fields + 1] = lane
  else
    lane = nil
  end
  -- The index first: should it fail (a key of the wrong type), the script stops
  -- before the hash exists, and nothing of this job is stored.
  if runAt > now then
    rcall("ZADD", scheduledKey, runAt, id)
    fields[#fields + 1] = "state"; fields[#fields + 1] = "scheduled"
    fields[#fields + 1] = "run_at"; fields[#fields + 1] = runAt
    rcall("HSET", jobKey, unpack(fields))
    return "scheduled"
  end
  if lane then
    local tag = queue_tag(jobKey)
    local score = lane_score(tag, priority)
    lane_enter(tag, lane, id, score)
    fields[#fields + 1] = "lscore"; fields[#fields + 1] = score
  else
    push_waiting(waitingKey, prioritizedKey, seqKey, id, priority)
  end
  fields[#fields + 1] = "state"; fields[#fields + 1] = "queued"
  rcall("HSET", jobKey, unpack(fields))
  return "queued"
end
