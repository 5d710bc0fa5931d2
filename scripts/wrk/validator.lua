-- wrk script for the validator's endpoints, used by scripts/bench-http.sh:
--
--   wrk ... -s scripts/wrk/validator.lua URL -- MODE LINES_FILE SERVICE_TOKEN
--
-- MODE introspect: POST /oauth2/introspect with `token=<line>` (RFC 7662 form);
-- MODE lookup: GET /v1/revocations/<line> (a session id per line); MODE healthz:
-- GET /healthz (the HTTP floor: routing, middleware and a tiny answer).
-- LINES_FILE holds one token or session id per line, cycled through (a single line:
-- the same one every time); every request carries the service credential.
--
-- With WRK_CHECK=1 in the environment every answer is checked (status 200 and, for
-- introspection, `"active":true`) and the mismatches are counted. Checking makes
-- wrk hand each body to Lua, which costs the load generator CPU, so the timed runs
-- leave it off and a short checked run comes first.

local checking = os.getenv("WRK_CHECK") == "1"
local threads = {}
requests_built = {}
counter = 0
bad = 0

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  local mode, file, service = args[1], args[2], args[3]
  local auth = { ["Authorization"] = "Bearer " .. service }
  for line in io.lines(file) do
    if #line > 0 then
      local r
      if mode == "introspect" then
        auth["Content-Type"] = "application/x-www-form-urlencoded"
        r = wrk.format("POST", "/oauth2/introspect", auth, "token=" .. line)
      elseif mode == "healthz" then
        r = wrk.format("GET", "/healthz")
      elseif mode == "lookup" then
        r = wrk.format("GET", "/v1/revocations/" .. line, auth)
      else
        error("mode must be introspect, lookup or healthz")
      end
      requests_built[#requests_built + 1] = r
    end
  end
  counter = math.random(#requests_built) - 1
end

function request()
  counter = counter % #requests_built + 1
  return requests_built[counter]
end

if checking then
  function response(status, headers, body)
    if status ~= 200 or (string.find(body, '"active":', 1, true) and
        not string.find(body, '"active":true', 1, true)) then
      bad = bad + 1
    end
  end
end

function done(summary, latency, requests)
  local mismatched = 0
  for _, t in ipairs(threads) do
    mismatched = mismatched + (t:get("bad") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "WRK-SUMMARY requests=%d seconds=%.3f p50_us=%d p99_us=%d max_us=%d errors=%d mismatched=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout, mismatched))
end
