--[[ end_for_good: the attempt held by ``token`` ends ``outcome`` ("cancelled",
  "discarded") with no retry and no dead letter: cancel_running's and discard's
  whole transition, which differ only in the outcome and what close_job records.
  Needs the includes before it: now_ms, count, count_type_error, ended_type_error,
  end_attempt, free_slot, close_job, flow.

  Returns 1, -1 when the lease was lost, or a WRONGTYPE error naming a key of the
  wrong type (nothing is changed in either case).
]]
local function end_for_good(jobKey, activeKey, statsKey, markerKey, jobId, token, entry, outcome, ttl, ...)
  local now = now_ms()
  local held = attempt_held(jobKey, token, "history", "name", "started_at", "slot")
  if not held then return -1 end
  if held.err then return held end
  local wrong = count_type_error(statsKey, now) or ended_type_error(held[5], markerKey, jobKey)
    or flow_type_error(jobKey, jobId, outcome, now)
  if wrong then return wrong end
  rcall("ZREM", activeKey, jobId)
  local job = end_attempt(held, jobKey, entry, now)
  free_slot(job[3], jobId, markerKey)
  close_job(jobKey, statsKey, outcome, ttl, ...)
  count_end(statsKey, now, job[1], outcome, job[2])
  flow_job_ended(jobKey, jobId, outcome, nil, now)
  return 1
end
