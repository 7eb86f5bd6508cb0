--[[ forget_dead: a dead job whose DeadLetter row is committed leaves the dead zset;
  its hash stays readable (state "dead") until the result TTL runs out.

  KEYS[1] job   hash
  KEYS[2] dead  zset   dead jobs awaiting their DeadLetter row

  ARGV[1] job id
  ARGV[2] seconds to keep the job hash

  Returns 1, or 0 when the job was not waiting to be mirrored.
]]
local rcall = redis.call
local jobKey, deadKey = KEYS[1], KEYS[2]
if rcall("ZREM", deadKey, ARGV[1]) == 0 then return 0 end
rcall("EXPIRE", jobKey, ARGV[2])
return 1
