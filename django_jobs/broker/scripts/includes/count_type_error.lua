-- count_type_error(statsKey, now): type_error for each hash count_queue, count_end
-- and tally_write add to at ``now``. Needs count, type_error.
local function count_type_error(statsKey, now)
  return type_error(statsKey, "hash")
    or type_error(statsKey .. ":m:" .. string.format("%d", math.floor(now / MINUTE_MS)), "hash")
    or type_error(statsKey .. ":q:" .. string.format("%d", math.floor(now / QUARTER_MS)), "hash")
    or type_error(statsKey .. ":jobs", "hash")
end
