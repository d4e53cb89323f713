-- bench/random-request.lua: the wrk script of every load scenario. Owns request choice and the
-- machine-readable summary. Each line of the file named by BENCH_LINES is
-- "PATH<TAB>AUTHORIZATION" (the header value may be empty), optionally followed by
-- "<TAB>METHOD<TAB>BODY" and any number of "<TAB>Header-Name: value" (a POST with a JSON body,
-- as Dropbox's RPC calls are; the body must not contain a tab). `init` loads the file once per
-- wrk thread and pre-formats one request per line, `request` picks one at random for every
-- request, and `done` prints one `BENCHJSON {...}` line that bench-tool reads.

local requests = {}
local count = 0

function init(args)
  local file = os.getenv("BENCH_LINES")
  if file == nil then
    error("BENCH_LINES is not set")
  end
  for line in io.lines(file) do
    local fields = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do
      fields[#fields + 1] = field
    end
    local path, auth = fields[1], fields[2]
    if path ~= nil and path ~= "" then
      local headers = {}
      if auth ~= nil and auth ~= "" then
        headers["Authorization"] = auth
      end
      local method = fields[3]
      if method == nil or method == "" then
        method = "GET"
      end
      local body = fields[4]
      if body == "" then
        body = nil
      end
      for i = 5, #fields do
        local name, value = fields[i]:match("^([^:]+):%s*(.*)$")
        if name ~= nil then
          headers[name] = value
        end
      end
      count = count + 1
      requests[count] = wrk.format(method, path, headers, body)
    end
  end
  if count == 0 then
    error("no request lines in " .. file)
  end
  -- Different sequences per thread: the table's address differs between Lua states.
  local seed = os.time() + tonumber(tostring(requests):match("0x(%x+)") or "0", 16) % 100000
  math.randomseed(seed)
end

function request()
  return requests[math.random(count)]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
