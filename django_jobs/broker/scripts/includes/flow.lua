-- Workflows (chain, group, then, finally_): what a member's end does to its flow.
-- Needs now_ms, waiting, count, lanes, write_job, type_error; includes flow_target_error,
-- flow_split and flow_counter inside flow_build.
-- The layout of a flow's hash is described in django_jobs/flows/layout.py, which
-- writes it.
--
-- A member job carries its flow in its options: "flow" is the flow hash's key (built
-- by keys.py), "#", and its place, "<node>:<position>" (a finally_ callback, which
-- reports to nobody, has the key alone). Its id has a "-" (``<flow id>-<n>-<pos>``;
-- a requeued member's too), which a plain job's 32 hex digits never have. A
-- transition that ends a job (ack, bury, discard, cancel, ...) calls flow_job_ended:
-- for a plain job that is one string.find on its id, and nothing else.
--
-- Exactly once: each position of a node records the first outcome it gets
-- ("<node>:<pos>" = letter .. job id [.. " " .. result]); a later report for the same
-- position is ignored, except dead -> succeeded / discarded / cancelled (a dead
-- letter requeued or discarded). Counters, next steps and callbacks move only on a
-- recorded change, in the same script as the job's own end, so a duplicate ack, a
-- lost worker or a replayed AOF can never start a step or callback twice.
-- Letters: o succeeded, d dead, x discarded, c cancelled.
--
-- A flow hash that is missing a part (tampered with, or cut short), or holds garbage
-- in one (a counter HINCRBY refuses: flow_incr), stops the flow where that part is;
-- it never fails the transition of the job itself. A
-- member whose flow hash is gone altogether (it expired while still "building": its
-- producer died before writing every job) ends as a plain job: nothing more starts.

-- flow_build(): the functions a member's end runs, made by the first one in a
-- script call (flow_options_ended, flow_options_error below): a plain job's
-- transition, the hot path, never makes them (Lua makes a closure for each local
-- function a script defines, on every call). Returns flow_options_ended and
-- flow_options_error.
local function flow_build()
-- include: flow_target_error
-- include: flow_split
-- include: flow_counter
  local FLOW_BUCKETS = {o = "succeeded", d = "dead", x = "discarded", c = "cancelled"}
  local FLOW_FINAL = {succeeded = true, failed = true, cancelled = true}

  -- Planning. Redis keeps what a script wrote before a command failed, so a member's
  -- end checks, before its transition's first write, the keys the walk below would
  -- write in the queues of the steps and callbacks it starts (another queue's
  -- waiting list, say): flow_type_error walks the flow as the end will, reading
  -- only. What the walk would write in the flow's hash (outcomes, counters, state)
  -- goes to flow_shadow meanwhile, so the members of one batch (an ack of several,
  -- a purge) plan in the order they end, each seeing those before it: the plan
  -- meets exactly the steps and callbacks the writes start.
  local flow_planning, flow_shadow, flow_checked, flow_wrong = false, {}, {}, nil
  -- The counters (F .. "\n" .. field) the plan found HINCRBY would refuse: the
  -- write leaves them alone, and the flow stops there (see flow_incr).
  local flow_refused = {}

  -- flow_get(F, field), flow_set(F, field, value, ...), flow_incr(F, field, by): the
  -- fields of a flow the walk both writes and reads, through flow_shadow while
  -- planning.
  local function flow_get(F, field)
    local planned = flow_planning and flow_shadow[F .. "\n" .. field]
    if planned then return planned end
    return rcall("HGET", F, field)
  end

  local function flow_set(F, ...)
    if not flow_planning then return rcall("HSET", F, ...) end
    for i = 1, select("#", ...), 2 do
      flow_shadow[F .. "\n" .. select(i, ...)] = select(i + 1, ...)
    end
  end

  -- flow_incr returns nil, writing nothing, for a garbage counter (tampered with):
  -- the plan finds it before the transition's first write, so an end never fails
  -- half-written over it; like a missing part, it stops the flow where it is.
  local function flow_incr(F, field, by)
    if not flow_planning then
      if next(flow_refused) and flow_refused[F .. "\n" .. field] then return nil end
      return rcall("HINCRBY", F, field, by)
    end
    local value = flow_counter(flow_get(F, field))
    if not value then
      flow_refused[F .. "\n" .. field] = true
      return nil
    end
    flow_shadow[F .. "\n" .. field] = tostring(value + by)
    return value + by
  end

  -- Caches of one script call, from what the walk never writes: a flow's key list
  -- for a queue (flow_keys) and whether it is cancelled (flow_cancelled: only
  -- flow_cancel.lua, another script, cancels a flow). flow_expire empties them, as
  -- an expiry may remove the hash.
  local flow_queue_keys, flow_is_cancelled = {}, {}
  -- The jobs flow_write stored and has not counted yet: stats key -> {marker, count}.
  local flow_enqueued = {}

  -- flow_keys(F, queue): the keys of ``queue`` as F's "q:<queue>" lists them, split,
  -- and the list as stored; false for none or a garbage list (not 7 keys), which
  -- flow_write skips.
  local function flow_keys(F, queue)
    local of_flow = flow_queue_keys[F]
    if not of_flow then
      of_flow = {}
      flow_queue_keys[F] = of_flow
    end
    local cached = of_flow[queue]
    if cached == nil then
      local text = rcall("HGET", F, "q:" .. queue)
      local q = text and flow_split(text)
      cached = q and #q >= 7 and {q, text} or false
      of_flow[queue] = cached
    end
    if cached then return cached[1], cached[2] end
    return false
  end

  local function flow_cancelled(F)
    local cancelled = flow_is_cancelled[F]
    if cancelled == nil then
      cancelled = flow_get(F, "state") == "cancelled"
      flow_is_cancelled[F] = cancelled
    end
    return cancelled
  end

  -- A stored signature's 11 parts (see flow_write), matched at once: its queue, its
  -- id and its lane ("" for none; lanes.lua).
  local FLOW_SIGNATURE = "^([^\n]*)\n([^\n]*)\n" .. string.rep("[^\n]*\n", 8) .. "([^\n]*)$"

  -- flow_plan_write(F, signature, always, now): flow_write while planning: check
  -- the keys of the step's queue (and lane) once per key list, as the flow lists
  -- them (flows written before and after a change of the key layout list others),
  -- and the step's own job key, every time: garbage there would pass for the step
  -- already written (write_job's "exists"), and the step would be lost. What
  -- flow_write skips (a garbage signature or key list) is not checked: a bad record
  -- costs its flow, never the other jobs of the call.
  local function flow_plan_write(F, signature, always, now)
    if flow_wrong or (not always and flow_cancelled(F)) then return end
    local queue, id, lane = string.match(signature, FLOW_SIGNATURE)
    local q, text = false, nil
    if queue then q, text = flow_keys(F, queue) end
    if not q then return end
    local lanes = flow_checked[text]
    if not lanes then
      lanes = {}
      flow_checked[text] = lanes
    end
    if not lanes[lane] then
      lanes[lane] = true
      flow_wrong = flow_target_error(q, lane, now)
      if flow_wrong then return end
    end
    flow_wrong = type_error(q[1] .. id, "hash")
  end

  -- flow_write(F, signature, input, now, always): enqueue one step or callback of the
  -- flow in its queue, ``input`` (a value, see flow_results, or nil) put before its
  -- arguments. A cancelled flow starts nothing more, but its finally_ callbacks
  -- (``always``).
  local function flow_write(F, signature, input, now, always)
    if flow_planning then return flow_plan_write(F, signature, always, now) end
    if not always and flow_cancelled(F) then return end
    local s = flow_split(signature)
    if #s ~= 11 then return end
    local q = flow_keys(F, s[1])
    if not q then return end
    local args, options = s[4], s[6]
    if input and string.sub(input, 1, 1) == "@" then
      -- A group's results by reference: named in the job's options, where no
      -- argument can pass for it; the worker puts them before its arguments.
      local option = '"flow_input":"' .. string.sub(input, 2) .. '"'
      if options == "{}" then options = "{" .. option .. "}" else options = "{" .. option .. "," .. string.sub(options, 2) end
    elseif input then
      if args == "[]" then args = "[" .. input .. "]" else args = "[" .. input .. "," .. string.sub(args, 2) end
    end
    local job = {s[2], s[3], args, s[5], options, s[7], s[8], s[9], s[10], s[11]}
    -- (push_waiting folds in an earlier build's sorted set at the waiting key.)
    if write_job(q[1], q[2], q[3], q[4], q[6], job, now) ~= "exists" then
      local pending = flow_enqueued[q[7]]
      if pending then pending[2] = pending[2] + 1 else flow_enqueued[q[7]] = {q[5], 1} end
    end
  end

  -- flow_count_enqueued(now): count the jobs flow_write stored, and wake their
  -- queues: once per queue for a whole group, not per member (the same script call,
  -- so nobody sees them uncounted).
  local function flow_count_enqueued(now)
    for stats, pending in pairs(flow_enqueued) do
      rcall("ZADD", pending[1], 0, "m")
      count_enqueued(stats, now, pending[2])
    end
    flow_enqueued = {}
  end

  local flow_start

  -- flow_begin(F, spec, input, now): start a child from its stored spec (see
  -- flow_start); nothing for none.
  local function flow_begin(F, spec, input, now)
    if not spec then return end
    if string.sub(spec, 1, 1) == "j" then
      flow_write(F, string.sub(spec, 2), input, now, false)
      return
    end
    local child = string.sub(spec, 2)
    if rcall("HGET", F, child .. "k") == "c" then
      flow_start(F, child, 1, input, now)
      return
    end
    if rcall("HEXISTS", F, child .. "f") == 1 then flow_incr(F, "open", 1) end
    -- A group's members' specs a thousand per read: a group of 100,000 costs a
    -- hundred reads, not 100,000 (and the plan reads them as often as the write).
    local count = tonumber(rcall("HGET", F, child .. "n")) or 0
    for first = 1, count, 1000 do
      local fields = {}
      for member = first, math.min(count, first + 999) do fields[#fields + 1] = child .. "." .. member end
      local specs = rcall("HMGET", F, unpack(fields))
      for i = 1, #specs do flow_begin(F, specs[i], input, now) end
    end
  end

  -- flow_start(F, node, pos, input, now): start the child at ``pos`` of ``node``: a
  -- job, or a sub-node (a chain starts its first child, a group all of its members).
  flow_start = function(F, node, pos, input, now)
    flow_begin(F, rcall("HGET", F, node .. "." .. pos), input, now)
  end

  -- flow_values(F, node, count): the recorded outcomes of a node's positions, in order.
  local function flow_values(F, node, count)
    local values = {}
    for first = 1, count, 1000 do
      local fields = {}
      for pos = first, math.min(count, first + 999) do fields[#fields + 1] = node .. ":" .. pos end
      local part = rcall("HMGET", F, unpack(fields))
      for i = 1, #part do values[#values + 1] = part[i] end
    end
    return values
  end

  -- A value a node passes on (to the next step, its parent, the flow's result) is
  -- JSON, or a reference to a group's results, "@<node>:<count>" (no JSON text starts
  -- with "@"). A group of up to FLOW_INLINE_COUNT members whose results take up to
  -- FLOW_INLINE_BYTES passes them as a JSON list, which a worker of any release
  -- reads; a larger one, or one holding a larger one, a reference, resolved by the
  -- worker that runs the next step, reading "<node>:<pos>" in pages
  -- (django_jobs/flows/results.py): a list of 100,000 is never built in one script
  -- call nor copied into arguments. The inline limits keep the last ack's script
  -- short (bench/flow_results.py, 1,000 results of 60 bytes: 3-8 ms on a loaded
  -- 2-core machine; of 500 bytes: 20-160 ms, so not inline).
  -- django_jobs/testing/local_flows.py mirrors this.
  local FLOW_INLINE_COUNT, FLOW_INLINE_BYTES = 1000, 65536

  -- flow_results(F, node, count): a group's value once all its members succeeded
  -- ("" while planning, which needs no values).
  local function flow_results(F, node, count)
    if flow_planning then return "" end
    if count <= FLOW_INLINE_COUNT then
      local results, size = {}, 2
      for _, value in ipairs(flow_values(F, node, count)) do
        local sep = type(value) == "string" and string.find(value, " ", 1, true)
        local result = sep and string.sub(value, sep + 1)
        size = size + (result and #result + 1 or 0)
        if not result or string.sub(result, 1, 1) == "@" or size > FLOW_INLINE_BYTES then
          results = nil
          break
        end
        results[#results + 1] = result
      end
      if results then return "[" .. table.concat(results, ",") .. "]" end
    end
    return "@" .. node .. ":" .. count
  end

  -- flow_summary(F, node, count): {"succeeded": [ids], "dead": [...], ...} for finally_
  -- ("" while planning).
  local function flow_summary(F, node, count)
    if flow_planning then return "" end
    local ids = {o = {}, d = {}, x = {}, c = {}}
    for _, value in ipairs(flow_values(F, node, count)) do
      local stop = string.find(value, " ", 1, true) or (#value + 1)
      local bucket = ids[string.sub(value, 1, 1)]
      if bucket then bucket[#bucket + 1] = '"' .. string.sub(value, 2, stop - 1) .. '"' end
    end
    local parts = {}
    for _, letter in ipairs({"o", "d", "x", "c"}) do
      parts[#parts + 1] = '"' .. FLOW_BUCKETS[letter] .. '":[' .. table.concat(ids[letter], ",") .. "]"
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end

  local flow_child_ended

  -- flow_expire(F): an ended flow is kept its ttl from now, once no group with a
  -- finally_ waits for a member ("open" counts those started and not yet called):
  -- a member ending later must still find the flow.
  local function flow_expire(F)
    if flow_planning or (tonumber(rcall("HGET", F, "open")) or 0) > 0 then return end
    -- A garbage ttl that EXPIRE would refuse ("1.5", "inf") is a day, as none is;
    -- so is one below a second ("0", "-5"): EXPIRE would delete the flow at once,
    -- and a later write of this walk recreate part of it with no TTL.
    local ttl = tonumber(rcall("HGET", F, "ttl"))
    local whole = ttl and ttl == math.floor(ttl) and ttl >= 1 and ttl < 1e15
    rcall("EXPIRE", F, whole and string.format("%d", ttl) or 86400)
    flow_queue_keys, flow_is_cancelled = {}, {} -- the hash may be gone
  end

  -- flow_node_ended(F, node, letter, id, result, now): a chain or group ended (or is
  -- held by a dead member): tell its parent, or, for the root, the flow's state.
  local function flow_node_ended(F, node, letter, id, result, now)
    local parent = rcall("HGET", F, node .. "p")
    if not parent then return end
    if parent ~= "" then
      local sep = string.find(parent, ":", 1, true)
      if not sep then return end
      flow_child_ended(F, string.sub(parent, 1, sep - 1), string.sub(parent, sep + 1), letter, id, result, now)
      return
    end
    if letter == "d" or FLOW_FINAL[flow_get(F, "state")] then return end
    if letter == "o" then
      flow_set(F, "state", "succeeded", "result", result, "finished_at", now)
    else
      flow_set(F, "state", "failed", "finished_at", now)
    end
    flow_expire(F)
  end

  -- flow_child_ended(F, node, pos, letter, id, result, now): record the outcome of one
  -- position of a node, once, and move the flow on when it changes something.
  flow_child_ended = function(F, node, pos, letter, id, result, now)
    local field = node .. ":" .. pos
    local old = flow_get(F, field)
    local was = old and string.sub(old, 1, 1)
    if was and (was ~= "d" or letter == "d") then return end
    local kind = rcall("HGET", F, node .. "k")
    local count = tonumber(rcall("HGET", F, node .. "n"))
    if not count or (kind ~= "c" and kind ~= "g") then return end
    if kind == "g" and letter == "o" then
      flow_set(F, field, "o" .. id .. " " .. result)
    else
      flow_set(F, field, letter .. id)
    end
    if kind == "c" then
      if letter ~= "o" then
        flow_node_ended(F, node, letter, id, nil, now)
      elseif tonumber(pos) < count then
        flow_start(F, node, tonumber(pos) + 1, result, now)
      else
        flow_node_ended(F, node, "o", id, result, now)
      end
      return
    end
    local ended = not was and flow_incr(F, node .. "e", 1)
    if ended == nil then return end -- a garbage count of ended members: the group stops
    if ended == count then
      local finally = rcall("HGET", F, node .. "f")
      if finally then
        flow_write(F, finally, flow_summary(F, node, count), now, true)
        flow_incr(F, "open", -1)
        if FLOW_FINAL[flow_get(F, "state")] then flow_expire(F) end
      end
    end
    if letter ~= "o" then
      flow_node_ended(F, node, letter, id, nil, now)
    elseif flow_incr(F, node .. "o", 1) == count then
      flow_node_ended(F, node, "o", id, flow_results(F, node, count), now)
    end
  end

  -- flow_member_ended(options, id, outcome, result, now): the end of a job whose
  -- stored options are ``options``; nothing unless they name a flow that is still
  -- stored. ``outcome`` is the job's final state (succeeded, dead, discarded or
  -- cancelled); ``result`` its JSON result.
  local function flow_member_ended(options, id, outcome, result, now)
    local F, at = string.match(options, '"flow":"([^"#]+)#([^"]+)"')
    if not F or rcall("EXISTS", F) == 0 then return end
    local sep = string.find(at, ":", 1, true)
    if not sep then return end
    local letter = ({succeeded = "o", dead = "d", discarded = "x", cancelled = "c"})[outcome]
    local before = flow_get(F, at)
    flow_child_ended(F, string.sub(at, 1, sep - 1), string.sub(at, sep + 1), letter, id, result, now)
    -- A dead member holds the flow until its dead letter is requeued or discarded.
    -- (A flow still being written stays "building": flow_built.lua decides then.)
    local state = flow_get(F, "state")
    if FLOW_FINAL[state] or flow_get(F, at) == before then return end
    local held = flow_incr(F, "dead", (letter == "d" and 1 or 0) - (before and string.sub(before, 1, 1) == "d" and 1 or 0))
    if held and state ~= "building" then flow_set(F, "state", held > 0 and "held" or "running") end
  end

  -- flow_options_ended(options, id, outcome, result, now): flow_member_ended, then
  -- the count of what it enqueued.
  local function flow_options_ended(options, id, outcome, result, now)
    if not options or not string.find(options, '"flow":"', 1, true) then return end
    flow_member_ended(options, id, outcome, result, now)
    flow_count_enqueued(now)
  end

  -- flow_options_error(options, id, outcome, now): nil, or type_error's refusal for
  -- the first key of the wrong type that flow_options_ended(options, id, outcome,
  -- ..., now) would write: the flow's hash, or a key of a queue a step or callback
  -- it starts is written to. Writes nothing; a transition calls it, for each job
  -- it ends, before its first write and in the order it ends them.
  local function flow_options_error(options, id, outcome, now)
    local F = options and string.match(options, '"flow":"([^"#]+)#')
    local wrong = F and type_error(F, "hash")
    if not F or wrong then return wrong or nil end
    flow_planning, flow_wrong = true, nil
    flow_options_ended(options, id, outcome, "null", now)
    flow_planning = false
    return flow_wrong
  end

  return flow_options_ended, flow_options_error
end

local flow_ended, flow_error -- flow_build's, once made

-- flow_options_ended(options, id, outcome, result, now), flow_options_error(options,
-- id, outcome, now): flow_build's, made for options that name a flow.
local function flow_options_ended(options, id, outcome, result, now)
  if not options or not string.find(options, '"flow":"', 1, true) then return end
  if not flow_ended then flow_ended, flow_error = flow_build() end
  flow_ended(options, id, outcome, result, now)
end

local function flow_options_error(options, id, outcome, now)
  if not options or not string.find(options, '"flow":"', 1, true) then return nil end
  if not flow_ended then flow_ended, flow_error = flow_build() end
  return flow_error(options, id, outcome, now)
end

-- flow_type_error(jobKey, id, outcome, now): flow_options_error for a job still
-- stored that ends ``outcome``; nothing read for a plain job (no "-" in its id).
local function flow_type_error(jobKey, id, outcome, now)
  if not string.find(id, "-", 1, true) then return nil end
  return flow_options_error(rcall("HGET", jobKey, "options"), id, outcome, now)
end

-- flow_job_ended(jobKey, id, outcome, result, now): flow_options_ended for a job
-- still stored; a job whose id has no "-" is no member (no read at all).
local function flow_job_ended(jobKey, id, outcome, result, now)
  if not string.find(id, "-", 1, true) then return end
  flow_options_ended(rcall("HGET", jobKey, "options"), id, outcome, result, now)
end
