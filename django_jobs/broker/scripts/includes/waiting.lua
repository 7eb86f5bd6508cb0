-- A queue's waiting jobs live in two keys. Priority 0, what most jobs have, is a
-- list: RPUSH/LPOP are O(1) at any backlog and an entry costs about 35 bytes
-- against about 140 in a sorted set. Every other priority is a sorted set scored
-- (100 - priority) * 2^44 + seq: higher priority first, FIFO within one.
-- fetch.lua takes priority > 0, then the list, then priority < 0.
local PRIORITY_STEP = 17592186044416 -- 2^44: room for the FIFO sequence
local PRIORITY_ZERO_SCORE = 100 * PRIORITY_STEP

-- A priority that is not a number counts as 0 and one outside -100..100 is
-- clamped, so a tampered job can neither break the script nor the ordering.
local function clamped_priority(priority)
  return math.max(-100, math.min(100, tonumber(priority) or 0))
end

-- upgrade_waiting(waitingKey, prioritizedKey): builds before the list layout kept
-- every waiting job in one sorted set at the waiting key, scored as the
-- prioritized set is now. Every script that reads or removes from the waiting key
-- calls this first, so such a set (left by an upgrade, or written again by an older
-- process during a rolling deploy) joins the prioritized set before any command
-- could fail on it half-way; a push does it when it meets one (push_waiting).
-- Its priority-0 jobs then run after those in the list and before lower
-- priorities. Otherwise it costs one TYPE.
local function upgrade_waiting(waitingKey, prioritizedKey)
  if rcall("TYPE", waitingKey)["ok"] == "zset" then
    rcall("ZUNIONSTORE", prioritizedKey, 2, prioritizedKey, waitingKey)
    rcall("DEL", waitingKey)
  end
end

-- next_seq(seqKey): the next number of the queue's FIFO sequence. A value INCR
-- cannot count on, or one outside 1..2^44 (garbage written by something else),
-- failed every push of a job that takes one, and so every fetch that promoted one:
-- the whole queue stopped. Such a value starts again from Redis' time in ms: above
-- any count a queue reaches (FIFO holds), below 2^44 until the year 2527. A key of
-- the wrong type still fails the call (quarantine.py moves it aside).
--
-- After one such start, a queue where more than one job a ms takes a number runs
-- ahead of the clock, so the clock alone could start a second one below the jobs
-- waiting: it starts above the highest number a waiting job holds too (in the
-- prioritized set and in every lane, see lanes.lua), each read band by band, one
-- ZREVRANGEBYSCORE per priority in use. Only garbage pays for this walk.
local function next_seq(seqKey)
  local seq = redis.pcall("INCR", seqKey)
  if type(seq) == "number" and seq > 0 and seq < PRIORITY_STEP then return seq end
  if rcall("TYPE", seqKey)["ok"] == "string" then
    local time = rcall("TIME")
    local start = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    -- The highest number held in a sorted set scored by priority band and number;
    -- one at or past 2^43 (a tampered score: the clock reaches it in 2248) is not.
    local function highest(key)
      local top, below = 0, "+inf"
      while true do
        local entry = redis.pcall("ZREVRANGEBYSCORE", key, below, "-inf", "LIMIT", 0, 1, "WITHSCORES")
        local score = entry[2] and tonumber(entry[2])
        if not score or score ~= score then return top end
        local band = math.floor(score / PRIORITY_STEP) * PRIORITY_STEP
        if score - band < PRIORITY_STEP / 2 then top = math.max(top, score - band) end
        if band == -math.huge then return top end
        below = "(" .. string.format("%.0f", band)
      end
    end
    local tag = string.sub(seqKey, 1, -5) -- "{P:q}:seq" (keys.py)
    start = math.max(start, highest(tag .. ":prioritized"))
    local lanes = redis.pcall("ZRANGE", tag .. ":keys", 0, -1)
    for _, lane in ipairs(lanes.err and {} or lanes) do
      start = math.max(start, highest(tag .. ":key:" .. lane))
    end
    rcall("SET", seqKey, string.format("%.0f", start))
  end
  return rcall("INCR", seqKey)
end

-- push_waiting(waitingKey, prioritizedKey, seqKey, id, priority): append a job to
-- the back of its priority. Only the sorted set needs a FIFO sequence number, so
-- only a job of another priority than 0 takes one. The score is formatted with
-- %.0f because Redis turns plain Lua numbers into strings with only 14 significant
-- digits. A push that meets an earlier build's sorted set at the waiting key (see
-- upgrade_waiting) folds it in and pushes again, so a script that only pushes
-- (enqueue) needs no TYPE first; any other wrong type still fails the push, before
-- the caller writes the job's hash.
local function push_waiting(waitingKey, prioritizedKey, seqKey, id, priority)
  local p = clamped_priority(priority)
  if p == 0 then
    if type(redis.pcall("RPUSH", waitingKey, id)) == "table" then -- an error reply
      upgrade_waiting(waitingKey, prioritizedKey)
      rcall("RPUSH", waitingKey, id)
    end
  else
    local seq = next_seq(seqKey)
    rcall("ZADD", prioritizedKey, string.format("%.0f", (100 - p) * PRIORITY_STEP + seq), id)
  end
end

-- remove_waiting(waitingKey, prioritizedKey, id, priority): take a job out of
-- waiting (a cancel). LREM scans the list: O(n) in the backlog, as in other
-- list-based queues; cancelling a waiting job is rare next to enqueue and fetch.
-- It scans from the back, where a job cancelled soon after its enqueue is. A
-- priority-0 job not in the list was moved to the sorted set by upgrade_waiting.
local function remove_waiting(waitingKey, prioritizedKey, id, priority)
  if clamped_priority(priority) ~= 0 or rcall("LREM", waitingKey, -1, id) == 0 then
    rcall("ZREM", prioritizedKey, id)
  end
end
