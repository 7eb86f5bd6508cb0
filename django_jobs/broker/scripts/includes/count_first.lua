-- count_first(statsKey, now, field, n, tally): count_queue and tally_write as the
-- first writes of a transition on the hot path (ack), with no command spent on
-- checking the hashes first: each increment checks its own. One refused (a hash
-- of the wrong type; a count that is not a whole number starts again instead) takes back those before it, so nothing is changed, and
-- returns type_error's refusal (or Redis' own error); otherwise nil. A transition
-- refused after it takes the counts back with count_take_back. Needs count,
-- type_error.

-- take_back(key, field, n): undo an HINCRBY of n. A count back at 0 is deleted (a
-- missing count reads as 0): an undo leaves no field the increment created, nor the
-- hash it created (a minute's or quarter's, whose TTL the increment had set).
local function take_back(key, field, n)
  if rcall("HINCRBY", key, field, string.format("%d", -n)) == 0 then rcall("HDEL", key, field) end
end

-- first_count(key, field, by, n): HINCRBY by ``by`` (n as a string), without
-- raising: a count that is not a whole number starts again from n (as count_add);
-- a key of the wrong type returns Redis' error.
local function first_count(key, field, by, n)
  local total = redis.pcall("HINCRBY", key, field, by)
  if type(total) == "table" and not type_error(key, "hash") then
    rcall("HSET", key, field, by)
    return n
  end
  return total
end

local function count_first(statsKey, now, field, n, tally)
  local minute, quarter = count_buckets(statsKey, now)
  local jobs, refused, undo = statsKey .. ":jobs", nil, 0
  -- Counts go as strings: Redis formats a Lua number argument with "%.17g".
  local by = string.format("%d", n)
  local total = first_count(statsKey, field, by, n)
  if type(total) == "table" then return type_error(statsKey, "hash") or total end
  total = first_count(minute, field, by, n)
  if type(total) == "table" then
    refused, undo = minute, 1
  else
    if total == n then rcall("EXPIRE", minute, MINUTE_TTL) end
    total = first_count(quarter, field, by, n)
    if type(total) == "table" then
      refused, undo = quarter, 2
    else
      if total == n then rcall("EXPIRE", quarter, QUARTER_TTL) end
      for name, count in pairs(tally) do
        total = first_count(jobs, name, string.format("%d", count), count)
        if type(total) == "table" then
          for done, was in pairs(tally) do
            if done == name then break end
            take_back(jobs, done, was)
          end
          refused, undo = jobs, 3
          break
        end
      end
      if not refused then return nil end
    end
  end
  if undo >= 3 then take_back(quarter, field, n) end
  if undo >= 2 then take_back(minute, field, n) end
  take_back(statsKey, field, n)
  return type_error(refused, "hash") or total
end

-- count_take_back(statsKey, now, field, n, tally): undo a count_first that
-- returned nil, with the same arguments (and the same ``now``).
local function count_take_back(statsKey, now, field, n, tally)
  local minute, quarter = count_buckets(statsKey, now)
  take_back(statsKey, field, n)
  take_back(minute, field, n)
  take_back(quarter, field, n)
  for name, by in pairs(tally) do take_back(statsKey .. ":jobs", name, by) end
end
