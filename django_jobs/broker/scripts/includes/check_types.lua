-- Keys a transition writes, checked before its first write. Redis does not undo
-- what a script wrote before it raised, so a key of the wrong type (garbage written
-- by a bug, another program or a person) met half-way would leave a job in no set
-- or its flow stranded. A transition checks first the keys it has not already read
-- with a type-bound command and returns the first one of the wrong type as an
-- error, having written nothing; its caller moves that key aside (quarantine.py)
-- and calls again. Needs count (the names of the counter hashes).

-- type_error(key, allowed): nil when ``key`` is missing or holds ``allowed`` (a
-- TYPE name); otherwise the error the transition returns. quarantine.py reads the
-- key and ``allowed`` back from its text.
local function type_error(key, allowed)
  local kind = rcall("TYPE", key)["ok"]
  if kind == "none" or kind == allowed then return nil end
  return redis.error_reply("WRONGTYPE " .. key .. " holds a " .. kind .. ", not a " .. allowed)
end

-- count_type_error(statsKey, now): type_error for each hash count_queue, count_end
-- and tally_write add to at ``now``.
local function count_type_error(statsKey, now)
  return type_error(statsKey, "hash")
    or type_error(statsKey .. ":m:" .. string.format("%d", math.floor(now / MINUTE_MS)), "hash")
    or type_error(statsKey .. ":q:" .. string.format("%d", math.floor(now / QUARTER_MS)), "hash")
    or type_error(statsKey .. ":jobs", "hash")
end

-- lane_type_error(tag, lane): type_error for the keys lanes.lua writes for ``lane``
-- of the queue whose keys start with ``tag``.
local function lane_type_error(tag, lane)
  return type_error(tag .. ":keys", "zset") or type_error(tag .. ":ring", "list")
    or type_error(tag .. ":key:" .. lane, "zset")
end

-- slot_type_error(slot, markerKey): type_error for the keys free_slot writes for a
-- run that held ``slot`` (its running set; a lane's ring and index; the marker).
local function slot_type_error(slot, markerKey)
  if not slot then return nil end
  local wrong = type_error(markerKey, "zset")
  if wrong or slot == "queue" then return wrong end
  wrong = type_error(slot, "set")
  local tagEnd, laneAt = string.find(slot, "}:krun:", 1, true)
  if wrong or not tagEnd then return wrong end
  return lane_type_error(string.sub(slot, 1, tagEnd), string.sub(slot, laneAt + 1))
end

-- ended_type_error(slot, markerKey, jobKey, id): slot_type_error, and type_error for
-- the flow hash flow_job_ended writes when the job is a flow's member (its "flow"
-- option as flow.lua reads it). What the flow's next step writes in its own queue
-- is not checked here.
local function ended_type_error(slot, markerKey, jobKey, id)
  local wrong = slot_type_error(slot, markerKey)
  if wrong or not string.find(id, "-", 1, true) then return wrong end
  local options = rcall("HGET", jobKey, "options")
  local flow = options and string.match(options, '"flow":"([^"#]+)#')
  return flow and type_error(flow, "hash") or nil
end
