--[[ ack: running -> succeeded, for a batch of jobs of one queue.

  KEYS[1] active  zset   running jobs by lease expiry
  KEYS[2] stats   hash   counters (see count.lua)
  KEYS[3] marker  zset   wake-up marker (a freed concurrency slot wakes a worker)

  ARGV[1] job key prefix
  ARGV[2] seconds to keep a finished job (result TTL)
  ARGV[3..] groups of 4 per job: id, lease token (see fetch.lua), result (JSON),
            history entry (JSON object without its closing brace, or "" for a
            plain success)

  A plain success appends nothing to the history: the job's worker, started_at and
  finished_at fields already say everything its entry would (JobHandle.history
  shows them as the last entry). That keeps a finished job's hash in Redis' compact
  encoding, about a third of the memory, for as long as its result is kept.

  A job of a flow moves its flow on (includes/flow.lua).

  Returns one entry per job: 1, or -1 when its lease was lost (that job is not
  changed; the others are acknowledged all the same) or when the job came earlier
  in the same batch (acknowledged and counted once); or a WRONGTYPE error naming
  a key one of them would write that holds the wrong type (no job is changed;
  type_error.lua).
]]
local rcall = redis.call
-- include: now_ms
-- include: count
-- include: type_error
-- include: count_first
-- include: ended_type_error
-- include: end_attempt
-- include: free_slot
-- include: waiting
-- include: lanes
-- include: write_job
-- include: flow

local activeKey, statsKey, markerKey = KEYS[1], KEYS[2], KEYS[3]
local jobPrefix, ttl = ARGV[1], ARGV[2]
local now = now_ms()
local nowText = string.format("%d", now) -- a number would be formatted with "%.17g"
-- Every job is read and every key it would write checked before the first write;
-- the counters are the first writes (count_first).
local held, acked, tally, seen = {}, 0, {}, {}
for i = 3, #ARGV, 4 do
  local jobKey, token = jobPrefix .. ARGV[i], ARGV[i + 1]
  local job
  if seen[jobKey] then
    job = false -- a second ack of the same job in this batch: its lease is spent
  elseif ARGV[i + 3] == "" then -- attempt_held, inlined: the hot path (a plain success)
    job = redis.pcall("HMGET", jobKey, "lease", "name", "started_at", "slot")
    if job.err then return type_error(jobKey, "hash") or job end
    job = job[1] == token and {job[2] or "", job[3], job[4]}
  else
    job = attempt_held(jobKey, token, "history", "name", "started_at", "slot")
    if job and job.err then return job end
  end
  local wrong = job and (ended_type_error(job[#job], markerKey, jobKey)
    or flow_type_error(jobKey, ARGV[i], "succeeded", now))
  if wrong then return wrong end
  if job then
    seen[jobKey] = true
    local name = job[#job - 2] or ""
    acked = acked + 1
    tally_add(tally, "finished\t" .. name .. "\tsucceeded", 1)
    tally_run(tally, name, job[#job - 1], now)
  end
  held[#held + 1] = job
end
if acked == 0 then
  local lost = {}
  for _ = 3, #ARGV, 4 do lost[#lost + 1] = -1 end
  return lost
end
local refused = count_first(statsKey, now, "succeeded", acked, tally)
if refused then return refused end

local replies, checked = {}, false
for i = 3, #ARGV, 4 do
  local id, result, entry = ARGV[i], ARGV[i + 2], ARGV[i + 3]
  local jobKey = jobPrefix .. id
  local job = held[(i - 3) / 4 + 1]
  if job and not checked then
    -- The active set's first write, after the counters': refused, they are undone.
    checked = true
    if type(redis.pcall("ZREM", activeKey, id)) == "table" then
      count_take_back(statsKey, now, "succeeded", acked, tally)
      return type_error(activeKey, "zset")
    end
  elseif job then
    rcall("ZREM", activeKey, id)
  end
  if job and entry == "" then
    rcall("HSET", jobKey, "state", "succeeded", "result", result, "finished_at", nowText)
    rcall("HDEL", jobKey, "lease", "slot")
  elseif job then
    job = end_attempt(job, jobKey, entry, now, "state", "succeeded", "result", result)
  end
  if job then
    free_slot(job[3], id, markerKey)
    rcall("EXPIRE", jobKey, ttl)
    flow_job_ended(jobKey, id, "succeeded", result, now)
    replies[#replies + 1] = 1
  else
    replies[#replies + 1] = -1
  end
end
return replies
