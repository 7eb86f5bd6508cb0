-- Counters, kept by the transitions themselves so they cost no round trip:
--
-- * a queue's running totals, in its stats hash (field = what happened);
-- * the same per minute and per quarter hour, for the dashboard's chart, in hashes
--   named after the stats key (":m:<minute>", ":q:<quarter hour>", numbered from the
--   epoch, by Redis' clock) that expire by themselves, so memory stays bounded;
--   enqueues per minute in one hash per quarter hour instead (count_enqueued);
-- * per job name, for metrics, in the stats key's ":jobs" hash: each end of a job
--   ("finished\t<name>\t<outcome>"), each failed attempt ("failed\t<name>\t<error
--   class>"), and a histogram of how long attempts ran ("run_bucket\t<name>\t<i>",
--   i indexing RUN_BUCKETS_MS, one past its end for longer runs; "run_ms\t<name>",
--   the sum). Transitions that end many jobs gather these in a tally, written once.
--
-- The derived keys share the stats key's hash tag, so a script touches one slot.
-- include: count_enqueued
local MINUTE_TTL = 7500 -- a little over 2 hours
local RUN_BUCKETS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}

-- count_buckets(statsKey, now): the minute's and the quarter hour's hashes at ``now``.
local function count_buckets(statsKey, now)
  return statsKey .. ":m:" .. string.format("%d", math.floor(now / MINUTE_MS)),
    statsKey .. ":q:" .. string.format("%d", math.floor(now / QUARTER_MS))
end

-- count_add(key, field, n): HINCRBY, but a count that is not a whole number
-- (garbage) starts again from n instead of failing the transition half-way (as
-- count_enqueued). Returns the new count.
local function count_add(key, field, n)
  local total = redis.pcall("HINCRBY", key, field, n)
  if type(total) == "table" then
    rcall("HSET", key, field, n)
    return n
  end
  return total
end

-- count_queue(statsKey, now, field, n): add n to a queue counter, its total and buckets.
local function count_queue(statsKey, now, field, n)
  count_add(statsKey, field, n)
  local minute, quarter = count_buckets(statsKey, now)
  if count_add(minute, field, n) == n then rcall("EXPIRE", minute, MINUTE_TTL) end
  if count_add(quarter, field, n) == n then rcall("EXPIRE", quarter, QUARTER_TTL) end
end

-- tally_add(tally, field, n): gather a per-name count (see tally_write).
local function tally_add(tally, field, n)
  tally[field] = (tally[field] or 0) + n
end

-- tally_run(tally, name, startedAt, now): one attempt of job ``name`` that ran from
-- startedAt (ms, Redis' clock; missing or malformed: not counted) until now. A run
-- of 0 ms adds nothing to the sum: a tally holds no 0, so no count is ever written
-- as 0 (count_first's undo deletes a count back at 0).
local function tally_run(tally, name, startedAt, now)
  local started = tonumber(startedAt)
  -- Garbage is not counted, only a time in range (nan, inf, a negative
  -- or huge number would become a count Redis refuses, or a wrong one).
  if not started or not (started >= 0 and started < 1e15) then return end
  local ms = math.floor(math.max(0, now - started))
  local bucket = #RUN_BUCKETS_MS + 1
  for i, bound in ipairs(RUN_BUCKETS_MS) do
    if ms <= bound then bucket = i; break end
  end
  tally_add(tally, "run_bucket\t" .. name .. "\t" .. bucket, 1)
  if ms > 0 then tally_add(tally, "run_ms\t" .. name, ms) end
end

-- tally_write(statsKey, tally): add the gathered per-name counts to the ":jobs" hash.
local function tally_write(statsKey, tally)
  local jobs = statsKey .. ":jobs"
  for field, n in pairs(tally) do count_add(jobs, field, n) end
end

-- count_end(statsKey, now, name, outcome, startedAt, errorClass): one job's attempt
-- ended (startedAt nil: it never ran, e.g. cancelled while waiting). A final
-- outcome (not "retried") ends the job; errorClass, when given, is a failed attempt.
local function count_end(statsKey, now, name, outcome, startedAt, errorClass)
  local tally = {}
  name = name or ""
  if startedAt then tally_run(tally, name, startedAt, now) end
  if errorClass then
    count_queue(statsKey, now, "failed", 1)
    tally_add(tally, "failed\t" .. name .. "\t" .. errorClass, 1)
  end
  count_queue(statsKey, now, outcome, 1)
  if outcome ~= "retried" then tally_add(tally, "finished\t" .. name .. "\t" .. outcome, 1) end
  tally_write(statsKey, tally)
end
