-- wrk script: POST canvas drawings as JSON to /api/predictions/, cycling through several different ones;
-- count the answers by HTTP status and note the id of every drawing answered 201. Run as
--   BODIES=bodies.jsonl IDS=ids.txt wrk -t1 -c8 -d10s -s bench/wrk/predict.lua http://127.0.0.1:8000
-- where bodies.jsonl holds one JSON request body per line. At the end it writes the ids to IDS (one a
-- line) and prints one line, "RESULT {json}": request count, latency percentiles (microseconds),
-- socket errors, timeouts and the count of each status.

local bodies = {}
local sent = 0
local threads = {}
statuses = {}
ids = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(os.getenv("BODIES")) do
    if #line > 0 then table.insert(bodies, line) end
  end
  assert(#bodies > 0, "no request bodies in " .. tostring(os.getenv("BODIES")))
  wrk.method = "POST"
  wrk.path = "/api/predictions/"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[sent % #bodies + 1])
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status == 201 then
    table.insert(ids, body:match('"id":%s*"([%x%-]+)"') or "?")
  end
end

function done(summary, latency, requests)
  local counts = {}
  local out = assert(io.open(os.getenv("IDS"), "w"))
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
    for _, id in ipairs(thread:get("ids")) do
      out:write(id, "\n")
    end
  end
  out:close()
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%s": %d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, errors.connect + errors.read + errors.write, errors.timeout,
    table.concat(parts, ", ")))
end
