-- job_fields(name, args, kwargs, options, maxAttempts, priority, now): a new job's
-- hash fields, for HSET. Fields at their default (no kwargs, no options, priority 0,
-- attempt 0) are left out: every reader has the same default, and a waiting job
-- stays small. ``now`` (ms) is stored as formatted here: handed to a command as a
-- number, Redis 7.0 formats it with "%.17g", about as costly as a short command.
local function job_fields(name, args, kwargs, options, maxAttempts, priority, now)
  local fields = {"name", name, "args", args, "max_attempts", maxAttempts, "enqueued_at", string.format("%d", now)}
  if kwargs ~= "{}" then
    fields[#fields + 1] = "kwargs"; fields[#fields + 1] = kwargs
  end
  if options ~= "{}" then
    fields[#fields + 1] = "options"; fields[#fields + 1] = options
  end
  if tonumber(priority) ~= 0 then
    fields[#fields + 1] = "priority"; fields[#fields + 1] = priority
  end
  return fields
end
