-- The one wrk script of the bench suite (driven by bench/wrk.py through the environment).
--
-- BENCH_REQUESTS   one request per line: "weight<TAB>METHOD<TAB>path<TAB>body"; "{id}" in the
--                  path or body is replaced by a random integer in [BENCH_ID_MIN, BENCH_ID_MAX],
--                  "{n}" by the number of the request (so no two bodies are the same)
-- BENCH_HEADERS    one "Name: value" per line, sent with every request
-- BENCH_TRACK=1    count responses by status and time the 2xx and 503 answers separately; each
--                  request carries a unique X-Request-ID, which the server echoes (API.md §2), so
--                  an answer is matched to its request even with 1,000 connections in flight
-- BENCH_STOP_AFTER stop after this many responses (0: run for the whole duration); wrk's main
--                  thread sleeps out its duration regardless, so the script also prints
--                  "BENCH_STOPPED" on stderr and bench/wrk.py ends the run with SIGINT
--
-- A single fixed request is sent as wrk's static request (no Lua per request), so wrk costs
-- what it always does; anything else is generated per request.
-- done() prints one line "BENCH_RESULT {json}" with wrk's own statistics and ours.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1e6 + tonumber(timespec.tv_nsec) / 1e3
end

local specs = {}
local total_weight = 0
for line in (os.getenv("BENCH_REQUESTS") or ""):gmatch("[^\n]+") do
  local weight, method, path, body = line:match("^(%d+)\t(%u+)\t([^\t]+)\t(.*)$")
  if not weight then
    error("bad BENCH_REQUESTS line: " .. line)
  end
  total_weight = total_weight + tonumber(weight)
  specs[#specs + 1] = {
    upto = total_weight,
    method = method,
    path = path,
    body = body ~= "" and body or nil,
    templated = (path .. body):find("{id}", 1, true) ~= nil or (path .. body):find("{n}", 1, true) ~= nil,
  }
end
if #specs == 0 then
  error("BENCH_REQUESTS is empty")
end

local headers = {}
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  headers[name] = value
end

local id_min = tonumber(os.getenv("BENCH_ID_MIN") or "1")
local id_max = tonumber(os.getenv("BENCH_ID_MAX") or "1")
local track = os.getenv("BENCH_TRACK") == "1"
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")

-- Per-thread state, read back in done() through thread:get().
responses = 0
statuses = {}
ok_latencies = {}
shed_latencies = {}
local pending = {}
local sent = 0
math.randomseed(now_us())
local id_prefix = string.format("b%x-", math.random(0, 0x7fffffff))

local function pick()
  if #specs == 1 then
    return specs[1]
  end
  local roll = math.random(1, total_weight)
  for _, spec in ipairs(specs) do
    if roll <= spec.upto then
      return spec
    end
  end
  return specs[#specs]
end

local dynamic = track or #specs > 1 or specs[1].templated

if dynamic then
  function request()
    local spec = pick()
    local path, body = spec.path, spec.body
    sent = sent + 1
    if spec.templated then
      local id, n = tostring(math.random(id_min, id_max)), tostring(sent)
      path = path:gsub("{id}", id):gsub("{n}", n)
      if body then
        body = body:gsub("{id}", id):gsub("{n}", n)
      end
    end
    if track then
      local request_id = id_prefix .. sent
      headers["X-Request-ID"] = request_id
      pending[request_id] = now_us()
    end
    return wrk.format(spec.method, path, headers, body)
  end
else
  wrk.method = specs[1].method
  wrk.path = specs[1].path
  wrk.body = specs[1].body
  for name, value in pairs(headers) do
    wrk.headers[name] = value
  end
end

if track or stop_after > 0 then
  function response(status, response_headers, _)
    responses = responses + 1
    if track then
      statuses[status] = (statuses[status] or 0) + 1
      local request_id = response_headers["x-request-id"] or response_headers["X-Request-ID"]
      local started = request_id and pending[request_id]
      if started then
        pending[request_id] = nil
        if status >= 200 and status < 300 then
          ok_latencies[#ok_latencies + 1] = now_us() - started
        elseif status == 503 then
          shed_latencies[#shed_latencies + 1] = now_us() - started
        end
      end
    end
    if stop_after > 0 and responses == stop_after then
      io.stderr:write("BENCH_STOPPED\n")
      io.stderr:flush()
      wrk.thread:stop()
    end
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

local function percentiles(values)
  if #values == 0 then
    return "null"
  end
  table.sort(values)
  local function at(p)
    return values[math.max(1, math.ceil(#values * p / 100))]
  end
  return string.format('{"count":%d,"p50":%.1f,"p99":%.1f,"max":%.1f}', #values, at(50), at(99),
    values[#values])
end

function done(summary, latency, _)
  local ok, shed, counts = {}, {}, {}
  for _, thread in ipairs(threads) do
    for _, value in ipairs(thread:get("ok_latencies") or {}) do
      ok[#ok + 1] = value
    end
    for _, value in ipairs(thread:get("shed_latencies") or {}) do
      shed[#shed + 1] = value
    end
    for status, count in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local status_json = {}
  for status, count in pairs(counts) do
    status_json[#status_json + 1] = string.format('"%d":%d', status, count)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"latency_us":{"p50":%.1f,"p90":%.1f,"p99":%.1f,"max":%.1f,' ..
    '"mean":%.1f},"tracked":%s,"statuses":{%s},"ok_us":%s,"shed_us":%s}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, track and "true" or "false", table.concat(status_json, ","),
    percentiles(ok), percentiles(shed)))
end
