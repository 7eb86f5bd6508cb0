--[[ upgrade_waiting: an earlier build's waiting sorted set -> the prioritized set
  (see includes/waiting.lua). Every script that touches the waiting key does this
  itself; this script is for plain reads of it (Broker.counts).

  KEYS[1] waiting      list (a zset in earlier builds)
  KEYS[2] prioritized  zset
]]
local rcall = redis.call
-- include: waiting

upgrade_waiting(KEYS[1], KEYS[2])
return 0
