--[[ flow_resolve: a dead member of a flow was discarded (its dead letter): the chain
  or group it held ends as failed. (Requeueing needs no script: the new job carries
  the member's place in its options, and its own end moves the flow on.)

  KEYS[1] flow  hash   the flow (keys.py QueueKeys.flow), as named in ARGV[1]

  ARGV[1] the dead job's options (JSON, as stored with the job)
  ARGV[2] the dead job's id (its hash is gone: the options come from its dead letter)

  Returns 1 when the flow is stored, 0 when it is not (ended and expired), or a
  WRONGTYPE error naming a key the flow's next step or callback would be written
  to that holds the wrong type (nothing is changed; type_error.lua).
]]
local rcall = redis.call
-- include: now_ms
-- include: waiting
-- include: count
-- include: type_error
-- include: lanes
-- include: write_job
-- include: flow

if rcall("EXISTS", KEYS[1]) == 0 then return 0 end
local now = now_ms()
local wrong = flow_options_error(ARGV[1], ARGV[2], "discarded", now)
if wrong then return wrong end
flow_options_ended(ARGV[1], ARGV[2], "discarded", nil, now)
return 1
