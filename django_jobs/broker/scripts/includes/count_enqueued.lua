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
local function count_enqueued(statsKey, now, n)
  local by = n == 1 and "1" or string.format("%d", n)
  rcall("HINCRBY", statsKey, "enqueued", by)
  local quarter = statsKey .. ":e:" .. string.format("%d", math.floor(now / QUARTER_MS))
  local minute = string.format("%d", math.floor(now / MINUTE_MS))
  if rcall("HINCRBY", quarter, minute, by) == n then rcall("EXPIRE", quarter, QUARTER_TTL) end
end
