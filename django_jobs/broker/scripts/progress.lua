--[[ progress: a running job reports how far it got (shown on the handle and admin).

  KEYS[1] job  hash

  ARGV[1] lease token
  ARGV[2] progress (JSON: {"percent": n, "message": s})

  Returns 1, or -1 when the lease was lost (nothing is changed).
]]
local rcall = redis.call
if rcall("HGET", KEYS[1], "lease") ~= ARGV[1] then return -1 end
rcall("HSET", KEYS[1], "progress", ARGV[2])
return 1
