-- waiting_score(priority, seq): the waiting-zset score as an exact integer string.
-- Higher priority sorts first, FIFO within one priority. Formatted with %.0f because
-- Redis turns plain Lua numbers into strings with only 14 significant digits.
local function waiting_score(priority, seq)
  return string.format("%.0f", (100 - tonumber(priority)) * 17592186044416 + seq)
end
