-- pulse(pulseKey, now, leaseMs): note that a worker with a lease of ``leaseMs`` reached
-- Redis at ``now``; returns the latest gap in which none did, as (stall_from,
-- resumed_at), or nil and the refusal when the key holds the wrong type
-- (type_error.lua; nothing is written).
--
-- Every renewal (renew.lua) and recovery pass (recover.lua) of a queue calls it; a
-- live worker calls one of them at least every third of its lease. ``at`` is when
-- one last reached Redis, written only once it is older than a sixteenth of the
-- shortest lease (an idle pass mostly writes nothing), so a call that finds it older
-- than half the shortest lease knows nobody could reach Redis in between: a stall
-- (DEBUG SLEEP, a fork, a paused VM), an outage, a forward jump of Redis' clock, or
-- only an idle queue. Redis' clock ran on meanwhile, so the leases that ran out in
-- that gap ran out while their workers could not renew them; recover.lua gives
-- those their remaining time again after the gap (at most the caller's lease).
--
-- The shortest lease is ``min_lease``, noted at ``min_lease_at`` and refreshed once a
-- lease by the callers that have it; forgotten once Redis was reached for four of
-- it since (``at`` - ``min_lease_at``: a stall does not age it), so a deploy that
-- lengthens the lease is judged by the new one soon. A gap that begins while the
-- previous one's hold is open (less than the caller's lease after it) extends it:
-- ``stall_from`` stays, so a lease held over the first gap stays held over both, at
-- most one lease after the last.
--
-- No gap is (now, now): a missing or unreadable pulse (garbage: not a positive finite
-- number, a clock that went back) never holds a lease, and every hold ends at most
-- one lease after Redis answers again, so nothing keeps recovery away for long.
local function pulse(pulseKey, now, leaseMs)
  local seen = redis.pcall("HMGET", pulseKey, "at", "stall_from", "resumed_at", "min_lease", "min_lease_at")
  if seen.err then return nil, type_error(pulseKey, "hash") end
  local function ms(i) -- a time or length, or nil for garbage (0, negative, inf, nan, future)
    local v = tonumber(seen[i])
    if v and v > 0 and v <= now then return v end
  end
  local at, stallFrom, resumedAt, minLease, minLeaseAt = ms(1), ms(2), ms(3), ms(4), ms(5)
  if stallFrom and resumedAt and stallFrom > resumedAt then stallFrom, resumedAt = nil, nil end
  if not (minLease and minLeaseAt and (at or now) - minLeaseAt <= 4 * minLease) then minLease = nil end
  local shortest = math.min(leaseMs, minLease or leaseMs)
  local write = {}
  if leaseMs <= shortest and (leaseMs ~= minLease or now - minLeaseAt >= minLease) then
    write = {"min_lease", leaseMs, "min_lease_at", now}
  end
  if at and now - at > shortest / 2 then
    if not (stallFrom and resumedAt and at < resumedAt + leaseMs) then stallFrom = at end
    resumedAt = now
    rcall("HSET", pulseKey, "at", now, "stall_from", stallFrom, "resumed_at", now, unpack(write))
    return stallFrom, resumedAt
  end
  if not at or now - at >= shortest / 16 then
    write[#write + 1], write[#write + 2] = "at", now
  end
  if #write > 0 then rcall("HSET", pulseKey, unpack(write)) end
  if not (stallFrom and resumedAt) then return now, now end
  return stallFrom, resumedAt
end
