-- GET /api/v1/payment/query?order_id=..., cycling over existing orders.
--
--   wrk -t1 -c64 -d10s --latency -s bench/query.lua http://127.0.0.1:PORT -- ORDER_ID_FILE
--
-- Each thread starts at a different place in the list. Env: BENCH_API_KEY, BENCH_API_SECRET.

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

local headers = {
   ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
   ["X-API-Secret"] = os.getenv("BENCH_API_SECRET"),
}

ids = {}
sent = 0
bad = {}
sample = ""

function init(args)
   for line in io.lines(args[1]) do
      if line ~= "" then table.insert(ids, line) end
   end
   if #ids == 0 then error("no order ids in " .. args[1]) end
   sent = (tid * 7919) % #ids
end

function request()
   sent = sent + 1
   local id = ids[((sent - 1) % #ids) + 1]
   return wrk.format("GET", "/api/v1/payment/query?order_id=" .. id, headers)
end

function response(status, hdrs, body)
   if status ~= 200 then
      bad[status] = (bad[status] or 0) + 1
      if sample == "" then
         sample = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

function done(summary, latency, requests)
   local total, statuses, first, nids = 0, {}, "", 0
   for _, t in ipairs(threads) do
      nids = #t:get("ids")
      for status, count in pairs(t:get("bad")) do
         statuses[status] = (statuses[status] or 0) + count
         total = total + count
      end
      if first == "" then first = t:get("sample") end
   end
   io.write(string.format("scenario query: cycling over %d orders, %d threads\n", nids,
                          #threads))
   io.write(string.format("non-200 responses: %d\n", total))
   for status, count in pairs(statuses) do
      io.write(string.format("  status %d: %d\n", status, count))
   end
   if first ~= "" then io.write("  first: " .. first .. "\n") end
   io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
                          summary.errors.connect, summary.errors.read, summary.errors.write,
                          summary.errors.timeout))
end
