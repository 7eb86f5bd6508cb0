-- count_field(value, default): a stored count (attempt, max_attempts) read
-- defensively. Garbage that is not a whole number Lua writes back the same way
-- (nan, inf, 1e20, a negative) is the default: otherwise the lease token built from
-- it ("#inf") would never match the one the worker presents, and the job would run
-- again and again without ever being recorded.
local function count_field(value, default)
  local number = tonumber(value)
  if not number or number ~= number or number < 0 or number >= 1e9 then return default end
  return math.floor(number)
end
