-- The enqueue counter of count.lua, which includes it; enqueue_one.lua includes
-- only this.
local MINUTE_MS, QUARTER_MS = 60000, 900000
local QUARTER_TTL = 90900 -- a little over 25 hours

-- count_enqueued(statsKey, now, n): count_queue for "enqueued", in one command less,
-- on the path every job takes: the running total, and the minute's count as a field
-- of the quarter hour's ":e:<quarter>" hash (field: the minute, numbered from the
-- epoch), from which stats.py reads the minute and sums the quarter. Enqueues that
-- an earlier build counted in the ":m:" and ":q:" hashes are added to them there.
-- ``by`` is n as a string: Redis formats a Lua number argument with "%.17g".
--
-- A count that is not a whole number (garbage, or one past 2^63) makes HINCRBY
-- fail; it runs after the jobs were written, so a failure would leave them stored
-- but the caller told the enqueue failed. A counter is only a statistic: a bad one
-- starts again from n (a hash of the wrong type still fails: HSET refuses it too).
local function count_enqueued(statsKey, now, n)
  local by = n == 1 and "1" or string.format("%d", n)
  if type(redis.pcall("HINCRBY", statsKey, "enqueued", by)) == "table" then
    rcall("HSET", statsKey, "enqueued", by)
  end
  local quarter = statsKey .. ":e:" .. string.format("%d", math.floor(now / QUARTER_MS))
  local minute = string.format("%d", math.floor(now / MINUTE_MS))
  local total = redis.pcall("HINCRBY", quarter, minute, by)
  if type(total) == "table" then
    rcall("HSET", quarter, minute, by)
    total = n
  end
  if total == n then rcall("EXPIRE", quarter, QUARTER_TTL) end
end
