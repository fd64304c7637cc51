-- GET /api/v1/payment/query?order_id=..., cycling over existing orders.
--
--   wrk -t1 -c64 -d10s --latency -s bench/query.lua http://127.0.0.1:PORT -- ORDER_ID_FILE
--
-- Each thread starts at a different place in the list. Env: BENCH_API_KEY, BENCH_API_SECRET.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
expect_status(200)

local headers = api_headers(false)

function init(args)
   load_ids(args[1], "order")
end

function request()
   return wrk.format("GET", "/api/v1/payment/query?order_id=" .. next_id(), headers)
end

function done(summary, latency, requests)
   local nids = #threads[1]:get("ids")
   io.write(string.format("scenario query: cycling over %d orders, %d threads\n", nids,
                          #threads))
   report(summary, 200)
end
