-- count_first(statsKey, now, field, n, tally): count_queue and tally_write as the
-- first writes of a transition on the hot path (ack), with no command spent on
-- checking the hashes first: each increment checks its own. One refused (a hash
-- of the wrong type) undoes those before it, so nothing is changed, and returns
-- type_error's refusal (or Redis' own error); otherwise nil. Called with -n and
-- the tally negated, it takes the counts back. Needs count, type_error.
local function count_first(statsKey, now, field, n, tally)
  local minute = statsKey .. ":m:" .. string.format("%d", math.floor(now / MINUTE_MS))
  local quarter = statsKey .. ":q:" .. string.format("%d", math.floor(now / QUARTER_MS))
  local jobs, refused, undo = statsKey .. ":jobs", nil, 0
  local total = redis.pcall("HINCRBY", statsKey, field, n)
  if type(total) == "table" then return type_error(statsKey, "hash") or total end
  total = redis.pcall("HINCRBY", minute, field, n)
  if type(total) == "table" then
    refused, undo = minute, 1
  else
    if total == n then rcall("EXPIRE", minute, MINUTE_TTL) end
    total = redis.pcall("HINCRBY", quarter, field, n)
    if type(total) == "table" then
      refused, undo = quarter, 2
    else
      if total == n then rcall("EXPIRE", quarter, QUARTER_TTL) end
      for name, by in pairs(tally) do
        total = redis.pcall("HINCRBY", jobs, name, by)
        if type(total) == "table" then
          for done, was in pairs(tally) do
            if done == name then break end
            rcall("HINCRBY", jobs, done, -was)
          end
          refused, undo = jobs, 3
          break
        end
      end
      if not refused then return nil end
    end
  end
  if undo >= 3 then rcall("HINCRBY", quarter, field, -n) end
  if undo >= 2 then rcall("HINCRBY", minute, field, -n) end
  rcall("HINCRBY", statsKey, field, -n)
  return type_error(refused, "hash") or total
end
