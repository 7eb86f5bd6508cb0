--[[ heartbeat: a worker says it is alive and what it runs. Timed by Redis' clock,
  like everything that decides anything: a host whose clock is off can neither make
  itself look alive longer nor age other workers out early.

  KEYS[1] worker   hash   this worker: host, pid, queues, jobs, heartbeat_at (ms)
  KEYS[2] workers  zset   worker id -> when its entry expires (ms)

  ARGV[1] worker id
  ARGV[2] seconds the entry lives without another heartbeat
  ARGV[3..] field, value pairs to store

  Returns the server time (ms).
]]
local rcall = redis.call
-- include: now_ms

local workerKey, workersKey = KEYS[1], KEYS[2]
local now = now_ms()
local ttl = tonumber(ARGV[2])
rcall("HSET", workerKey, "heartbeat_at", now, unpack(ARGV, 3))
rcall("EXPIRE", workerKey, ttl)
rcall("ZADD", workersKey, now + ttl * 1000, ARGV[1])
rcall("ZREMRANGEBYSCORE", workersKey, "-inf", now)
return now
