-- POST /v1/payment (crypto gateway, seed 002): each request a new order with its own nonce,
-- signed beforehand.
--
--   wrk -t1 -c64 -d10s --latency -s bench/cryptogw_create.lua http://127.0.0.1:PORT -- FILE THREADS
--
-- FILE: "timestamp TAB nonce TAB signature TAB body" a line (prepare.py cryptogw).
-- Env: BENCH_CRYPTO_KEY. Success: 200 with "code":10000.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")
dofile(dir .. "signed_lines.lua")
expect_status(200, '"code":10000')

local api_key = os.getenv("BENCH_CRYPTO_KEY")

function request()
   local ts, nonce, sig, body = next_line():match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
   return wrk.format("POST", "/v1/payment", {
      ["Content-Type"] = "application/json", ["X-API-Key"] = api_key,
      ["X-Timestamp"] = ts, ["X-Nonce"] = nonce, ["X-Signature"] = sig}, body)
end

function done(summary, latency, requests)
   report_lines("cryptogw_create", summary)
end
