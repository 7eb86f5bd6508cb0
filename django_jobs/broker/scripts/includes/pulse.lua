-- pulse(pulseKey, now, stallMs): note that a worker reached Redis at ``now``; returns
-- the latest gap in which none did, as (stall_from, resumed_at), or nil and the
-- refusal when the key holds the wrong type (type_error.lua; nothing is written).
--
-- Every renewal (renew.lua) and recovery pass (recover.lua) of a queue writes ``at``;
-- a live worker calls one of them at least every third of its lease, so a call that
-- finds ``at`` older than ``stallMs`` (half a lease) knows nobody could reach Redis in
-- between: a stall (DEBUG SLEEP, a fork, a paused VM), an outage, a forward jump of
-- Redis' clock, or only an idle queue. Redis' clock ran on meanwhile, so the leases
-- that ran out in that gap ran out while their workers could not renew them;
-- recover.lua gives those their remaining time again after the gap (at most one lease).
-- No gap is (now, now): a missing or unreadable pulse (garbage, a clock that went
-- back) never holds a lease, and each lease is held for one gap at most, so nothing
-- keeps recovery away for long.
local function pulse(pulseKey, now, stallMs)
  local seen = redis.pcall("HMGET", pulseKey, "at", "stall_from", "resumed_at")
  if seen.err then return nil, type_error(pulseKey, "hash") end
  local at = tonumber(seen[1])
  if at and now - at > stallMs then
    rcall("HSET", pulseKey, "at", now, "stall_from", at, "resumed_at", now)
    return at, now
  end
  rcall("HSET", pulseKey, "at", now)
  local stallFrom, resumedAt = tonumber(seen[2]), tonumber(seen[3])
  if not stallFrom or not resumedAt or stallFrom > resumedAt or resumedAt > now then
    return now, now
  end
  return stallFrom, resumedAt
end
