-- GET /api/v1/payment/transactions?limit=20&starting_after=<cursor>: a page deep in the
-- history, as a client walking it asks for the next one. transactions.lua with a cursor file:
--
--   wrk -t1 -c64 -d10s --latency -s bench/transactions_cursor.lua http://127.0.0.1:PORT \
--       -- CURSOR_FILE
--
-- Env: BENCH_API_KEY, BENCH_API_SECRET (the history merchant's test key).

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "transactions.lua")

local cursor_init = init
function init(args)
   if not args[1] then error("usage: ... -s transactions_cursor.lua URL -- CURSOR_FILE") end
   cursor_init(args)
end
