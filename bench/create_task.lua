-- POST /api/v1/tasks with dispatch true: the task and its payment order in one call.
--
--   wrk -t1 -c64 -d10s --latency -s bench/create_task.lua http://127.0.0.1:PORT -- PREFIX
--
-- Every request has its own task_id, PREFIX-<thread>-<n>; use a new PREFIX for every run
-- against the same database. Env: BENCH_API_KEY, BENCH_API_SECRET, BENCH_CALLBACK_URL.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
expect_status(201)

local headers = api_headers(true)
local body_format = '{"task_id":"%s","title":"Bench task","amount":5000,"currency":"CNY",'
   .. '"payment_method":"alipay","return_url":"https://your-app.com/payment/success",'
   .. '"callback_url":"'
   .. CALLBACK_URL
   .. '","dispatch":true}'

prefix = "bench"
sent = 0

function init(args)
   prefix = (args[1] or "bench") .. "-" .. tid
end

function request()
   sent = sent + 1
   local body = string.format(body_format, prefix .. "-" .. sent)
   return wrk.format("POST", "/api/v1/tasks", headers, body)
end

function done(summary, latency, requests)
   io.write(string.format("scenario create_task: %d threads\n", #threads))
   report(summary, 201)
end
