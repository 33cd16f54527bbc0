-- wrk script: tallies which worker answered each request, from the body
-- "Hello from [node ]worker <id> (pid <pid>)", and counts non-2xx answers.
-- done() prints one line per worker: "bench-share <id> <count>", then
-- "bench-non2xx <count>" and "bench-unknown <count>" (bodies without an id).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- BENCH_SLOW_EVERY=N (run.py's mixed mode): every Nth request of each
-- thread asks the demo worker for `/sleep/50`, the others for `/`.
local slow_every = tonumber(os.getenv("BENCH_SLOW_EVERY") or "0") or 0
if slow_every > 0 then
  local sent = 0
  function request()
    sent = sent + 1
    local path = (sent % slow_every == 0) and "/sleep/50" or "/"
    return wrk.format(nil, path)
  end
end

-- Globals of each thread's Lua state, read back in done() with thread:get().
shares = {}
non2xx = 0
unknown = 0

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  local id = body and body:match("worker (%d+)")
  if id then
    shares[id] = (shares[id] or 0) + 1
  else
    unknown = unknown + 1
  end
end

function done(summary, latency, requests)
  local total, bad, other = {}, 0, 0
  for _, thread in ipairs(threads) do
    for id, count in pairs(thread:get("shares")) do
      total[id] = (total[id] or 0) + count
    end
    bad = bad + thread:get("non2xx")
    other = other + thread:get("unknown")
  end
  for id, count in pairs(total) do
    io.write(string.format("bench-share %s %d\n", id, count))
  end
  io.write(string.format("bench-non2xx %d\n", bad))
  io.write(string.format("bench-unknown %d\n", other))
end
