-- wrk script: replays pre-signed webhook requests round-robin, counts responses by
-- status, and prints one JSON summary line (prefix BENCH_JSON) with the latency
-- percentiles wrk's own report lacks (p99.9).
--
-- Environment: BENCH_REQUESTS = file of (signature line, body line) pairs written by
-- bench/payload.py; BENCH_PATH = request path.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local reqs = {}
local idx = 0

function init(args)
  local file = assert(io.open(os.getenv("BENCH_REQUESTS"), "r"))
  local path = os.getenv("BENCH_PATH") or "/"
  while true do
    local sig = file:read("*l")
    if not sig then break end
    local body = file:read("*l")
    -- Pre-formatted once: request() only hands out strings.
    reqs[#reqs + 1] = wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["X-Crystallize-Signature"] = sig,
    }, body)
  end
  file:close()
  assert(#reqs > 0, "BENCH_REQUESTS holds no request")
  idx = math.random(#reqs) - 1
  statuses = {}
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for status, n in pairs(s) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"statuses": {%s}, "latency_us": {"min": %d, "mean": %.1f, "max": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p99.9": %d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ", "),
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
