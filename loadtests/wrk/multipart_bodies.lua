-- wrk script of the host benchmark (loadtests/bench_host.py): POSTs the multipart bodies named after `--`
-- in turn, one per request, and prints the run's summary as one JSON line for the bench to read.
--   wrk -t2 -c16 -d10s -s multipart_bodies.lua http://127.0.0.1:PORT/embed -- CONTENT_TYPE body-00.bin ...
local requests = {}
local next_request = 1

function init(args)
  local headers = { ["Content-Type"] = args[1] }
  for i = 2, #args do
    local file = assert(io.open(args[i], "rb"))
    local body = file:read("*a")
    file:close()
    requests[#requests + 1] = wrk.format("POST", wrk.path, headers, body)
  end
  assert(#requests > 0, "no request bodies given after --")
  -- threads start at different bodies, so the server sees them mixed
  next_request = ((index or 1) - 1) % #requests + 1  -- `index`: set by setup() in this thread's globals
end

function setup(thread)
  setup_count = (setup_count or 0) + 1
  thread:set("index", setup_count)
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
