-- wrk script for ops/bench/run-all: durable commands, one agent registration a request.
--
--   wrk ... -s commands.lua URL -- TOKEN
--
-- Every request is the same `POST /v1/agents` (names need not be unique): each one appends
-- an `agent.registered` event, fsynced before the 201, like pgbench's one-row transaction.

local body = '{"name":"bench-burst","description":"An agent registered by the command benchmark.",'
  .. '"skills":["benchmarking"],"languages":["en"],"webhook_url":"https://agent.example.com/hooks/bench"}'
local prepared

function init(args)
  prepared = wrk.format("POST", "/v1/agents", {
    ["Authorization"] = "Bearer " .. args[1],
    ["Content-Type"] = "application/json",
  }, body)
end

function request()
  return prepared
end

function done(summary, latency, requests)
  io.write(string.format("p50_us %d\np99_us %d\np999_us %d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
