-- GET /api/v1/payments/<id> (seed 004's Payments resource), cycling over existing Payments.
--
--   wrk -t1 -c64 -d10s --latency -s bench/payment_get.lua http://127.0.0.1:PORT -- PAYMENT_ID_FILE
--
-- PAYMENT_ID_FILE: integer Payment ids, one a line (made by `prepare.py payments`, one
-- Payment for each of the query scenario's orders). A read: the key alone, no X-API-Secret.
-- Each thread starts at a different place in the list. Env: BENCH_API_KEY.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
expect_status(200)

local headers = api_headers(false)
headers["X-API-Secret"] = nil  -- reads take the key alone

function init(args)
   load_ids(args[1], "payment")
end

function request()
   return wrk.format("GET", "/api/v1/payments/" .. next_id(), headers)
end

function done(summary, latency, requests)
   local nids = #threads[1]:get("ids")
   io.write(string.format("scenario payment_get: cycling over %d payments, %d threads\n",
                          nids, #threads))
   report(summary, 200)
end
