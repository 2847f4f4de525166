-- wrk script for ops/bench/verify/run: rotates over the benchmark's keys, one per request.
--
--   wrk ... -s requests.lua URL -- auth KEYS_FILE            GET /v1/auth, Authorization: Bearer <key>
--   wrk ... -s requests.lua URL -- verify KEYS_FILE TOKEN    POST /v1/verify {"api_key": <key>, "cost": 1}
--   wrk ... -s requests.lua URL -- register TOKEN            POST /v1/agents, the same body every time
--                                                            (ops/bench/run-all's durable commands: one
--                                                            fsynced agent.registered event each)
--
-- Every request is formatted once in init(); request() only hands them out. Each wrk thread
-- starts at its own offset in the key list.

local next_id = 0
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

local requests = {}
local position = 1

local registration = '{"name":"bench-burst","description":"An agent registered by the command benchmark.",'
  .. '"skills":["benchmarking"],"languages":["en"],"webhook_url":"https://agent.example.com/hooks/bench"}'

function init(args)
  local mode, keys_file, token = args[1], args[2], args[3]
  if mode == "register" then
    requests[1] = wrk.format("POST", "/v1/agents", {
      ["Authorization"] = "Bearer " .. args[2],
      ["Content-Type"] = "application/json",
    }, registration)
    return
  end
  for key in io.lines(keys_file) do
    if key ~= "" then
      if mode == "auth" then
        requests[#requests + 1] = wrk.format("GET", "/v1/auth", { ["Authorization"] = "Bearer " .. key })
      elseif mode == "verify" then
        requests[#requests + 1] = wrk.format("POST", "/v1/verify", {
          ["Authorization"] = "Bearer " .. token,
          ["Content-Type"] = "application/json",
        }, '{"api_key":"' .. key .. '","cost":1}')
      else
        error("mode must be auth, verify or register, not " .. tostring(mode))
      end
    end
  end
  if #requests == 0 then
    error("no keys in " .. tostring(keys_file))
  end
  position = ((thread_id or 0) * 7919) % #requests + 1
end

function request()
  local r = requests[position]
  position = position % #requests + 1
  return r
end

-- Percentiles wrk's --latency table leaves out (ops/bench/run-all reads p999).
function done(summary, latency, requests)
  io.write(string.format("p50_us %d\np99_us %d\np999_us %d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
