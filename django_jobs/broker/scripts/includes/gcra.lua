-- A rate limit as GCRA (the generic cell rate algorithm): one number per limit, the
-- theoretical arrival time (tat) of the next start, kept in a string key in ms.
-- Starts are spaced ``interval`` ms apart (period / count); ``tolerance`` (burst *
-- interval) lets that many come early. In any window of one period, at most count
-- + burst starts get through, and the earliest moment the next may is exact, so a
-- held-back worker sleeps until then instead of polling.
--
-- gcra_open(key, interval, tolerance, now): the limit's state for this call.
-- gcra_allows(rate, now): whether one more start may happen now.
-- gcra_take(rate, now): record one start. gcra_next(rate): when the next may start.
-- gcra_close(rate, now): write the state back (only if it changed); the key
-- expires once its tat has passed, when it would say no more than no key does.
local function gcra_open(key, interval, tolerance, now)
  local tat = tonumber(rcall("GET", key)) or now
  -- Later than this rate could ever set it: set under a slower rate since loosened
  -- in the settings, or garbage (nan too). Not an hour's wait: the burst counts
  -- as used up.
  if not (tat <= now + tolerance + interval) then tat = now + tolerance end
  return {key = key, interval = interval, tolerance = tolerance, tat = tat, taken = false}
end

local function gcra_allows(rate, now)
  return math.max(rate.tat, now) - now <= rate.tolerance
end

local function gcra_take(rate, now)
  rate.tat = math.max(rate.tat, now) + rate.interval
  rate.taken = true
end

local function gcra_next(rate)
  return math.ceil(rate.tat - rate.tolerance)
end

local function gcra_close(rate, now)
  if rate.taken then
    rcall("SET", rate.key, string.format("%.3f", rate.tat), "PX",
          math.max(1, math.ceil(rate.tat - now)))
  end
end

-- gcra_room(rate, now): how many starts may happen now, one after another.
local function gcra_room(rate, now)
  return math.floor((now + rate.tolerance - math.max(rate.tat, now)) / rate.interval) + 1
end
