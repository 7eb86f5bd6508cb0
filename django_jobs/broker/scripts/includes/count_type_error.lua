-- count_type_error(statsKey, now): type_error for each hash count_queue, count_end
-- and tally_write add to at ``now``. Needs count, type_error.
local function count_type_error(statsKey, now)
  local minute, quarter = count_buckets(statsKey, now)
  return type_error(statsKey, "hash") or type_error(minute, "hash") or type_error(quarter, "hash")
    or type_error(statsKey .. ":jobs", "hash")
end
