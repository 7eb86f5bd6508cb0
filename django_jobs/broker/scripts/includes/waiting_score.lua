-- waiting_score(priority, seq): the waiting-zset score as an exact integer string.
-- Higher priority sorts first, FIFO within one priority. A priority that is not a
-- number counts as 0 and one outside -100..100 is clamped, so a tampered job can
-- neither break the script nor the ordering. Formatted with %.0f because Redis
-- turns plain Lua numbers into strings with only 14 significant digits.
local function waiting_score(priority, seq)
  local p = math.max(-100, math.min(100, tonumber(priority) or 0))
  return string.format("%.0f", (100 - p) * 17592186044416 + seq)
end
