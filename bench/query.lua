-- GET /api/v1/payment/query?order_id=..., cycling over existing orders.
--
--   wrk -t1 -c64 -d10s --latency -s bench/query.lua http://127.0.0.1:PORT -- ORDER_ID_FILE
--
-- Each thread starts at a different place in the list. Env: BENCH_API_KEY, BENCH_API_SECRET.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
expect_status(200)

local headers = api_headers(false)

ids = {}
sent = 0

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

function done(summary, latency, requests)
   local nids = #threads[1]:get("ids")
   io.write(string.format("scenario query: cycling over %d orders, %d threads\n", nids,
                          #threads))
   report(summary, 200)
end
