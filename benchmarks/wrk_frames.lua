-- wrk script for proxy_overhead.py: cycle through many frame URLs, print one JSON line.
--
-- Why cycle: a single URL fetched over and over measures Orthanc's cache of one
-- parsed file, not frame serving. The plan file (first argument after `--`)
-- holds header lines "H <Name>: <value>" and then one request path per line.
-- Requests are formatted once per thread in init(), so wrk spends no Lua time
-- per request; each thread starts at a different place in the list.

local requests = {}
local next_index = 1

function setup(thread)
  -- Runs in the main state, once per thread, before init().
  thread_count = (thread_count or 0) + 1
  thread:set("thread_number", thread_count)
end

local function read_plan(path)
  local headers, paths = {}, {}
  for line in io.lines(path) do
    local name, value = line:match("^H ([^:]+): (.*)$")
    if name then
      headers[name] = value
    elseif line:sub(1, 1) == "/" then
      paths[#paths + 1] = line
    end
  end
  return headers, paths
end

function init(args)
  local headers, paths = read_plan(args[1])
  for i, path in ipairs(paths) do
    requests[i] = wrk.format("GET", path, headers)
  end
  local threads = tonumber(args[2]) or 1
  next_index = 1 + math.floor((thread_number - 1) * #requests / threads) % #requests
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

function done(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
