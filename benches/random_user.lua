-- wrk script for scripts/bench.sh (the fallback when oha is not available):
-- GET /user/{id} with id drawn uniformly from 1..ROWS by LuaJIT's math.random, per request.
--   wrk -c 50 -t 2 -d 30s -s benches/random_user.lua http://127.0.0.1:8001 -- 10000000
-- done() prints one JSON line (tool "wrk") that benches/report.py reads.
local rows = 10000000
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

function init(args)
  if args[1] then rows = tonumber(args[1]) end
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
end

function request()
  return wrk.format("GET", "/user/" .. math.random(1, rows))
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"tool":"wrk","requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p99.9":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
