-- POST /api/v1/payment/refund: a partial refund of 1 cent, cycling over paid orders.
--
--   wrk -t1 -c64 -d10s --latency -s bench/refund.lua http://127.0.0.1:PORT \
--       -- ORDER_ID_FILE [METHOD]
--
-- ORDER_ID_FILE holds completed (paid) orders, one a line, made by `prepare.py paid`: each
-- holds far more in escrow than one run refunds from it (run.sh makes a new pool before a
-- run could use it up). Every request refunds 1 cent (reason quality_issue) of the next
-- order; each thread starts at a different place in the list, so concurrent requests are
-- for different orders (refunds of one order queue on its row lock). METHOD is the
-- refund_method, "original" (default: back through the sandbox channel, `processing` until
-- the worker confirms it) or "balance" (to the available balance, at once). Anything but
-- 200 is unexpected; a refund_not_allowed or already_refunded answer means an order ran out
-- of escrow, which done() reports as "escrow exhausted". done() also prints "most refunds
-- to one order: K", an upper bound on the cents any one order lost in this run, which
-- run.sh adds up.
-- Env: BENCH_API_KEY, BENCH_API_SECRET.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
expect_status(200)
local count_status = response

local headers = api_headers(true)
local body_format = '{"order_id":"%s","amount":1,"reason":"quality_issue","refund_method":"%s"}'

ids = {}
method = "original"
sent = 0
exhausted = 0

function init(args)
   for line in io.lines(args[1]) do
      if line ~= "" then table.insert(ids, line) end
   end
   if #ids == 0 then error("no order ids in " .. args[1]) end
   method = args[2] or "original"
   sent = (tid * 7919) % #ids
   start = sent
end

function request()
   sent = sent + 1
   local id = ids[((sent - 1) % #ids) + 1]
   return wrk.format("POST", "/api/v1/payment/refund", headers,
                     string.format(body_format, id, method))
end

function response(status, hdrs, body)
   count_status(status, hdrs, body)
   if status == 400 and body and (string.find(body, '"refund_not_allowed"', 1, true)
                                  or string.find(body, '"already_refunded"', 1, true)) then
      exhausted = exhausted + 1
   end
end

function done(summary, latency, requests)
   local nids, most, ran_out = #threads[1]:get("ids"), 0, 0
   for _, t in ipairs(threads) do
      -- a thread sent `sent - start` requests round the list: at most ceil(n / #ids) per order
      local n = t:get("sent") - t:get("start")
      most = most + math.floor((n + nids - 1) / nids)
      ran_out = ran_out + t:get("exhausted")
   end
   io.write(string.format("scenario refund: 1 cent, refund_method %s, cycling over %d paid "
                          .. "orders, %d threads\n", threads[1]:get("method"), nids, #threads))
   io.write(string.format("most refunds to one order: %d\n", most))
   local warnings = {}
   if ran_out > 0 then
      warnings[1] = string.format("WARNING: escrow exhausted: %d refunds were refused "
                                  .. "(no escrow left; use more or bigger orders)", ran_out)
   end
   report(summary, 200, warnings)
end
