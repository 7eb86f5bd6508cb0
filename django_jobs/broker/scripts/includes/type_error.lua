-- type_error(key, allowed): nil when ``key`` is missing or holds ``allowed`` (a TYPE
-- name); otherwise the error a transition returns instead of writing anything.
--
-- Redis does not undo what a script wrote before it failed, so a key of the wrong
-- type (garbage left by a bug, another program or a person) met half-way would
-- leave a job in no set or its flow stranded. A transition checks first the keys
-- it has not already read with a type-bound command; its caller moves the key this
-- names aside (quarantine.py reads the key and ``allowed`` back from the text) and
-- calls again.
local function type_error(key, allowed)
  local kind = rcall("TYPE", key)["ok"]
  if kind == "none" or kind == allowed then return nil end
  return redis.error_reply("WRONGTYPE " .. key .. " holds a " .. kind .. ", not a " .. allowed)
end
