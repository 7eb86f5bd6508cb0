-- now_ms(): the Redis server's clock in milliseconds, so leases and delays do not
-- depend on the clocks of the hosts that run workers and web processes.
local function now_ms()
  local t = rcall("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
