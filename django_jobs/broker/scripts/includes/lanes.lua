-- Per-key lanes (limit_by). A keyed job never enters waiting: it waits in its
-- lane, one per (job name, key), "<job name>:<key>". Every key is built from the
-- queue's hash tag "{P:q}" (keys.py), so a transition stays in the queue's slot:
--   {P:q}:keys          zset   every lane with jobs -> IN_RING (0) while it waits
--                              for its turn in the ring, the ms time it is parked
--                              until, or SLOT_WAIT: until one of its slots frees
--   {P:q}:ring          list   the lanes whose turn it is, round robin: fetch.lua
--                              pops the first, and pushes it back at the end
--                              after it served one job. An entry whose lane is not
--                              IN_RING (parked since) is skipped.
--   {P:q}:key:<lane>    zset   the lane's queued jobs; score = priority, then the
--                              job's place (lscore, kept through retries)
--   {P:q}:krun:<lane>   set    ids of the lane's running jobs that hold a slot
--   {P:q}:krate:<lane>  string the lane's rate limit (gcra.lua)
-- A cancel may leave a lane empty in the zset: the fetch that meets it drops it.
-- Needs waiting.
local IN_RING = 0
local SLOT_WAIT = 4000000000000000 -- ms, far past any real time
local SLOT_WAIT_TEXT = "4000000000000000"
local PARKED_MIN, PARKED_MAX = "(" .. IN_RING, "(" .. SLOT_WAIT_TEXT -- score ranges

-- The "{P:q}" every key of a queue starts with.
local function queue_tag(key)
  return string.sub(key, 1, (string.find(key, "}", 1, true)))
end

-- lane_score(tag, priority): the place of a job entering its lane for the first
-- time: higher priority first, then FIFO by the queue's sequence.
local function lane_score(tag, priority)
  local seq = next_seq(tag .. ":seq")
  return string.format("%.0f", (100 - clamped_priority(priority)) * PRIORITY_STEP + seq)
end

-- lane_ready(tag, lane): the lane takes its turn at the end of the ring.
local function lane_ready(tag, lane)
  rcall("ZADD", tag .. ":keys", IN_RING, lane)
  rcall("RPUSH", tag .. ":ring", lane)
end

-- lane_park(tag, lane, at): the lane may not be served before ``at`` (a longer
-- park already there stays; a lane waiting for a slot is looked at again then).
-- Its entry in the ring, if any, goes (LREM: a RateLimited or an ordered retry,
-- not a fetch, parks a lane this way).
local function lane_park(tag, lane, at)
  local keysKey = tag .. ":keys"
  local current = tonumber(rcall("ZSCORE", keysKey, lane))
  if current == IN_RING then rcall("LREM", tag .. ":ring", 0, lane) end
  if not current or current < at or current >= SLOT_WAIT then
    rcall("ZADD", keysKey, string.format("%.0f", at), lane)
  end
end

-- lane_enter(tag, lane, id, score): queue a job in its lane at ``score``; a lane
-- new to the zset joins the end of the ring.
local function lane_enter(tag, lane, id, score)
  rcall("ZADD", tag .. ":key:" .. lane, score, id)
  if not rcall("ZSCORE", tag .. ":keys", lane) then lane_ready(tag, lane) end
end

-- requeue(waitingKey, prioritizedKey, seqKey, jobKey, id, priority, lane, lscore):
-- a job becomes queued again (promoted, given back, taken back from a lost
-- worker): into its lane at its old place, or into waiting.
local function requeue(waitingKey, prioritizedKey, seqKey, jobKey, id, priority, lane, lscore)
  if not lane then
    push_waiting(waitingKey, prioritizedKey, seqKey, id, priority)
    return
  end
  local tag = queue_tag(jobKey)
  if not lscore then
    lscore = lane_score(tag, priority)
    rcall("HSET", jobKey, "lscore", lscore)
  end
  lane_enter(tag, lane, id, lscore)
end
