-- wrk script for OAuth 2.0 token and introspection endpoints of any server, used by
-- scripts/bench-peer.sh (Session Ledger's and Keycloak's, with the same settings):
--
--   wrk ... -s scripts/wrk/oauth.lua URL -- MODE PATH LINES_FILE [AUTHORIZATION] [THREADS]
--
-- MODE refresh: POST PATH `grant_type=refresh_token&refresh_token=<line>`, the
-- lines cycled through; for a server that lets a refresh token be used again
-- (Keycloak's default).
-- MODE chain: the same request, but every refresh token is used once, as a
-- rotating server demands: each line starts a chain, a request takes the token that
-- has waited longest, and the `refresh_token` of its answer joins the back of the
-- queue. Each chain is refreshed strictly one request after the other (a token's
-- successor exists only once its answer is read), like a client that refreshes its
-- own session; with more lines than connections no connection waits for a token.
-- A failed refresh ends its chain; a request made with no token left is sent with
-- the token `exhausted`, which the server refuses, so it shows as an error.
-- Answers are parsed in Lua in this mode (wrk hands every body to the script).
-- MODE introspect: POST PATH `token=<line>` (RFC 7662), the lines cycled through.
-- AUTHORIZATION, when given and not empty, is sent as the Authorization header
-- (client credentials, e.g. `Basic …`). THREADS is wrk's -t (default 1): in chain
-- mode thread k of THREADS takes every THREADS-th line, so no token is used twice.
--
-- With WRK_CHECK=1 in the environment every answer is checked (status 200; an
-- introspection `"active":true`; a refresh answer carrying a `refresh_token`) and the
-- mismatches are counted, at the load generator's cost; the timed runs leave it off
-- (chain mode reads every answer anyway).

local checking = os.getenv("WRK_CHECK") == "1"
local chaining = os.getenv("WRK_CHAIN") == "1"
local threads = {}
local next_id = 0
mode = nil
requests_built = {}
counter = 0
bad = 0
queue = {}
head = 1
tail = 0

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local path

local function refresh_request(token)
  return wrk.format("POST", path, headers,
    "grant_type=refresh_token&refresh_token=" .. token)
end

function init(args)
  local file, auth, nthreads
  mode, path, file, auth, nthreads = args[1], args[2], args[3], args[4], tonumber(args[5] or "1")
  if auth and #auth > 0 then
    headers["Authorization"] = auth
  end
  if (mode == "chain") ~= chaining then
    error("MODE chain needs WRK_CHAIN=1 in the environment (and only it)")
  end
  local i = 0
  for line in io.lines(file) do
    if #line > 0 then
      if mode == "chain" then
        if i % nthreads == thread_id then
          tail = tail + 1
          queue[tail] = line
        end
      elseif mode == "refresh" then
        requests_built[#requests_built + 1] = refresh_request(line)
      elseif mode == "introspect" then
        requests_built[#requests_built + 1] = wrk.format("POST", path, headers, "token=" .. line)
      else
        error("MODE must be refresh, chain or introspect")
      end
      i = i + 1
    end
  end
  if mode ~= "chain" then
    counter = math.random(#requests_built) - 1
  end
end

function request()
  if mode == "chain" then
    local token = "exhausted"
    if head <= tail then
      token = queue[head]
      queue[head] = nil
      head = head + 1
    end
    return refresh_request(token)
  end
  counter = counter % #requests_built + 1
  return requests_built[counter]
end

if checking or chaining then
  function response(status, headers, body)
    if mode == "chain" then
      local token = status == 200 and string.match(body, '"refresh_token":"([^"]+)"')
      if token then
        tail = tail + 1
        queue[tail] = token
      else
        bad = bad + 1
      end
    elseif status ~= 200 then
      bad = bad + 1
    elseif mode == "introspect" and not string.find(body, '"active":true', 1, true) then
      bad = bad + 1
    elseif mode == "refresh" and not string.find(body, '"refresh_token":"', 1, true) then
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
