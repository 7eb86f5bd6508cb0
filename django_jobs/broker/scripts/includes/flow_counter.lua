-- flow_counter(value): a counter of a flow's hash as HINCRBY reads it (none is 0),
-- or nil when HINCRBY would refuse it: not an integer in Redis' own form ("abc",
-- "1.5", "01", " 1", "0x10", all of which tonumber takes) or more than 18 digits,
-- where one more could overflow. Included inside flow.lua's flow_build.
local function flow_counter(value)
  if not value or value == "0" then return 0 end
  local digits = string.match(value, "^%-?([1-9]%d*)$")
  return digits and #digits <= 18 and tonumber(value) or nil
end
