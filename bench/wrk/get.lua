-- wrk script: GET one path with an API key; count non-200 answers; print a RESULT line as post.lua does.
-- Usage: wrk -s bench/wrk/get.lua URL -- PATH   (API key in env AUDITSVC_BENCH_KEY)
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  failed = 0
  headers = {["Authorization"] = "Bearer " .. os.getenv("AUDITSVC_BENCH_KEY")}
end

function request()
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  if status ~= 200 then failed = failed + 1 end
end

function done(summary, latency, requests)
  local failed_total = 0
  for _, thread in ipairs(threads) do failed_total = failed_total + thread:get("failed") end
  io.write(string.format(
    'RESULT {"requests": %d, "acked": %d, "events": 0, "failed": %d, "errors": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f}\n',
    summary.requests, summary.requests - failed_total, failed_total,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
