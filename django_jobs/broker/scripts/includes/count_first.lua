-- count_first(statsKey, now, field, n, tally): count_queue and tally_write as the
-- first writes of a transition on the hot path (ack), with no command spent on
-- checking the hashes first: each increment checks its own. One refused (a hash
-- of the wrong type) undoes those before it, so nothing is changed, and returns
-- type_error's refusal (or Redis' own error); otherwise nil. Called with -n and
-- the tally negated, it takes the counts back. Needs count, type_error.
local function count_first(statsKey, now, field, n, tally)
  local hashes = {statsKey, statsKey .. ":m:" .. string.format("%d", math.floor(now / MINUTE_MS)),
                  statsKey .. ":q:" .. string.format("%d", math.floor(now / QUARTER_MS))}
  local jobs = statsKey .. ":jobs"
  for i, hash in ipairs(hashes) do
    local total = redis.pcall("HINCRBY", hash, field, n)
    if type(total) == "table" then
      for j = i - 1, 1, -1 do rcall("HINCRBY", hashes[j], field, -n) end
      return type_error(hash, "hash") or total
    end
    if total == n and i > 1 then rcall("EXPIRE", hash, i == 2 and MINUTE_TTL or QUARTER_TTL) end
  end
  for name, by in pairs(tally) do
    local total = redis.pcall("HINCRBY", jobs, name, by)
    if type(total) == "table" then
      for done, undo in pairs(tally) do
        if done == name then break end
        rcall("HINCRBY", jobs, done, -undo)
      end
      for _, hash in ipairs(hashes) do rcall("HINCRBY", hash, field, -n) end
      return type_error(jobs, "hash") or total
    end
  end
  return nil
end
