-- wrk script for scripts/bench-http.sh: HTTP/1.1 pipelining, DEPTH requests per write
-- (the TechEmpower "plaintext" style; depth 1 is plain keep-alive).
--   wrk -c 64 -t 2 -d 10s -s benches/pipeline.lua http://127.0.0.1:8101/json -- 16
-- wrk counts every response, so requests/s is responses per second. done() prints one JSON
-- line (tool "wrk") that benches/report.py reads.
local depth = 16

function init(args)
  depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

function request()
  return req
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"tool":"wrk","depth":%d,"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p99.9":%d,"max":%d,"mean":%.1f}}\n',
    depth, summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
