-- GET /api/v1/payment/transactions?limit=20: the merchant's newest 20 transactions.
--
--   wrk -t1 -c64 -d10s --latency -s bench/transactions.lua http://127.0.0.1:PORT \
--       [-- CURSOR_FILE]
--
-- Without CURSOR_FILE every request asks for the first page. With it (transactions_cursor),
-- each asks for the page after a cursor, `&starting_after=<transaction_id>`, cycling over
-- the cursors in the file (made by `prepare.py history`: the next_cursor of every page of
-- 20 of the whole history, as a client walking it sends them), each thread starting at a
-- different place. Anything but 200 is unexpected. The fixture is a merchant of its own
-- with a history of a fixed size, so the numbers do not depend on what other scenarios ran
-- before. Env: BENCH_API_KEY, BENCH_API_SECRET (that merchant's test key).

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
expect_status(200)

local headers = api_headers(false)
local path = "/api/v1/payment/transactions?limit=20"

cursors = {}
sent = 0

function init(args)
   if args[1] then
      for line in io.lines(args[1]) do
         if line ~= "" then table.insert(cursors, line) end
      end
      if #cursors == 0 then error("no cursors in " .. args[1]) end
      sent = (tid * 7919) % #cursors
   end
end

function request()
   sent = sent + 1
   if #cursors == 0 then
      return wrk.format("GET", path, headers)
   end
   local cursor = cursors[((sent - 1) % #cursors) + 1]
   return wrk.format("GET", path .. "&starting_after=" .. cursor, headers)
end

function done(summary, latency, requests)
   local ncursors = #threads[1]:get("cursors")
   if ncursors == 0 then
      io.write(string.format("scenario transactions: first page of 20, %d threads\n",
                             #threads))
   else
      io.write(string.format("scenario transactions_cursor: pages of 20 after %d cursors, "
                             .. "%d threads\n", ncursors, #threads))
   end
   report(summary, 200)
end
