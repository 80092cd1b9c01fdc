-- wrk script of bench/bench_api_load.py: GET one path, rotating the bearer tokens listed in a
-- file (one a line; an empty line: no Authorization header), and print one summary line.
-- Usage: wrk ... -s bench/api_load.lua URL -- TOKEN_FILE PATH

local tokens = {}
local path = "/"
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  path = args[2]
  i = math.random(#tokens) -- each wrk thread starts elsewhere in the list
end

function request()
  i = i % #tokens + 1
  local token = tokens[i]
  if token == "" then
    return wrk.format("GET", path)
  end
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("AICLOUD %d %d %d %d %d %d %d %.1f %.1f %.1f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
