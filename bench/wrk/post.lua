-- wrk script: POST pre-built bodies with fresh idempotency keys; record every acknowledged key.
-- Usage: wrk -s bench/wrk/post.lua URL -- BODIES_FILE OUTPUT_DIR RUN_LABEL   (API key in env AUDITSVC_BENCH_KEY)
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  counter, acked, events, failed = 0, 0, 0, 0
  out_dir = args[2]
  run = args[3]  -- unique per run: keys never repeat across phases
  keys = io.open(out_dir .. "/acked-" .. id .. ".txt", "w")
  keys:setvbuf("full")
  local content_type = os.getenv("AUDITSVC_BENCH_CONTENT_TYPE") or "application/json"
  headers = {["Content-Type"] = content_type, ["Authorization"] = "Bearer " .. os.getenv("AUDITSVC_BENCH_KEY")}
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]:gsub("__KEY__", run .. "t" .. id .. "r" .. counter)
  return wrk.format("POST", "/api/v1/events", headers, body)
end

function response(status, headers, body)
  if status == 201 then
    acked = acked + 1
    for key in body:gmatch('"idempotency_key":"([^"]+)"') do  -- a CloudEvent's id becomes this
      keys:write(key, "\n")
      events = events + 1
    end
    if acked % 50 == 0 then keys:flush() end
  elseif status == 202 then  -- stream mode: queued under this id
    acked = acked + 1
    events = events + 1
    keys:write("id:", body:match('"id":"([^"]+)"'), "\n")
    if acked % 50 == 0 then keys:flush() end
  else
    failed = failed + 1
    if failed <= 3 then
      local log = io.open(out_dir .. "/failed-" .. id .. ".txt", "a")
      log:write(status, " ", body:sub(1, 300), "\n")
      log:close()
    end
  end
end

function done(summary, latency, requests)
  local acked_total, events_total, failed_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    acked_total = acked_total + thread:get("acked")
    events_total = events_total + thread:get("events")
    failed_total = failed_total + thread:get("failed")
  end
  io.write(string.format(
    'RESULT {"requests": %d, "acked": %d, "events": %d, "failed": %d, "errors": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f}\n',
    summary.requests, acked_total, events_total, failed_total,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
