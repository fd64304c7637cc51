-- POST /mapi.php (EasyPay, seed 003): each request a new order, signed beforehand.
--
--   wrk -t1 -c64 -d10s --latency -s bench/epay_mapi.lua http://127.0.0.1:PORT -- FILE THREADS
--
-- FILE: urlencoded form bodies, one a line (prepare.py epay). Success: 200 with "code":1.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")
dofile(dir .. "signed_lines.lua")
expect_status(200, '"code":1')

local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}

function request()
   return wrk.format("POST", "/mapi.php", headers, next_line())
end

function done(summary, latency, requests)
   report_lines("epay_mapi", summary)
end
