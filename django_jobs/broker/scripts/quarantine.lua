--[[ quarantine: keys of a queue holding the wrong type of value -> moved aside.

  A key written with another type (by a bug, another program or a person) makes
  every command on it fail with WRONGTYPE, so every fetch of its queue would fail
  until someone removed it. fetch.lua fails before it takes anything (see its
  prepare); its caller then calls this, once, and fetches
  again. The key is renamed, not deleted, for a person to look at (an earlier
  quarantined copy of the same key is replaced).

  KEYS[2i-1] a key of the queue, KEYS[2i] its quarantine name (keys.quarantined:
             the same hash tag)
  ARGV[i]    the types the key may hold, "|"-separated, as TYPE names them

  Returns {key, type, ...}: each key moved aside and the type it held. Pairs
  without an ARGV entry (or an ARGV entry without a pair) are ignored.
]]
local rcall = redis.call

local moved = {}
for i = 1, math.min(#ARGV, math.floor(#KEYS / 2)) do
  local key, aside = KEYS[2 * i - 1], KEYS[2 * i]
  local kind = rcall("TYPE", key)["ok"]
  if kind ~= "none" and not string.find("|" .. ARGV[i] .. "|", "|" .. kind .. "|", 1, true) then
    rcall("RENAME", key, aside)
    moved[#moved + 1] = key
    moved[#moved + 1] = kind
  end
end
return moved
