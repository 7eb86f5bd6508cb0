--[[ upgrade_waiting: a queue's waiting jobs as builds before the list layout kept
  them (one sorted set at the waiting key, scored exactly as the prioritized set is
  now) -> the prioritized set, so no job is stranded by the change. Does nothing
  when the waiting key is already a list, or missing. Run once per queue and
  process (Broker._register_queues), before anything else touches the queue.

  KEYS[1] waiting      list (a zset in earlier builds)
  KEYS[2] prioritized  zset

  Returns how many jobs it moved. Moved priority-0 jobs run after those in the
  list, and before any of a lower priority.
]]
local kind = redis.call("TYPE", KEYS[1])["ok"]
if kind ~= "zset" then return 0 end
local moved = redis.call("ZCARD", KEYS[1])
redis.call("ZUNIONSTORE", KEYS[2], 2, KEYS[2], KEYS[1])
redis.call("DEL", KEYS[1])
return moved
