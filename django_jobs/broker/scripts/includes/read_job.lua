-- read_job(jobKey, ...): HMGET of the given fields, or nil when the key holds no job
-- (missing, or not a hash). Uses pcall: a script that raised halfway would leave the
-- jobs it had already moved in no state at all, since Redis does not roll back.
local function read_job(jobKey, ...)
  local fields = redis.pcall("HMGET", jobKey, ...)
  if type(fields) ~= "table" or fields.err then return nil end
  for _, value in ipairs(fields) do
    if value then return fields end
  end
  return nil
end
