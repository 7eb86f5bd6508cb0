-- flow_split(text): the "\n"-separated parts of a flow's stored signature or key
-- list (compact JSON never holds a raw newline). Included inside flow.lua's
-- flow_build.
local function flow_split(text)
  local parts, start = {}, 1
  while true do
    local stop = string.find(text, "\n", start, true)
    if not stop then
      parts[#parts + 1] = string.sub(text, start)
      return parts
    end
    parts[#parts + 1] = string.sub(text, start, stop - 1)
    start = stop + 1
  end
end
