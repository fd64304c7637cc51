-- POST /api/v1/payment/create, each request for the next pre-created (undispatched) task.
--
--   wrk -t1 -c64 -d10s --latency -s bench/create_payment.lua http://127.0.0.1:PORT \
--       -- TASK_ID_FILE THREADS
--
-- The ids in TASK_ID_FILE (one a line, made by prepare.py) are split between the wrk
-- threads (line i goes to thread i mod THREADS), so no task is paid for twice. If a
-- thread runs out of ids it starts over, which makes 409 duplicate_order answers: done()
-- reports that as "ids exhausted" so the run can be redone with more tasks. done() also
-- prints "task lines used: K": lines after K were not sent, run.sh hands them to the next run.
-- Env: BENCH_API_KEY, BENCH_API_SECRET, BENCH_CALLBACK_URL.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")
dofile(dir .. "signed_lines.lua")  -- the task ids, one a line, split between the threads
expect_status(201)

local path = "/api/v1/payment/create"
local headers = api_headers(true)
local body_format = '{"task_id":"%s","amount":5000,"currency":"CNY","payment_method":"alipay",'
   .. '"return_url":"https://your-app.com/payment/success","callback_url":"'
   .. CALLBACK_URL .. '"}'

function request()
   local id = next_line()
   return wrk.format("POST", path, headers, string.format(body_format, id))
end

function done(summary, latency, requests)
   local ids_total, ran_out, lines_used = 0, 0, 0
   for i, t in ipairs(threads) do
      local n_ids, n_sent = #t:get("lines"), t:get("sent")
      ids_total = ids_total + n_ids
      -- this thread's last id was on line (k - 1) * #threads + tid + 1 of the file
      local k = math.min(n_sent, n_ids)
      if k > 0 then lines_used = math.max(lines_used, (k - 1) * #threads + i) end
      ran_out = ran_out + t:get("exhausted")
   end
   io.write(string.format("scenario create_payment: %d task ids for %d threads\n",
                          ids_total, #threads))
   io.write(string.format("task lines used: %d\n", lines_used))
   local warnings = {}
   if ran_out > 0 then
      warnings[1] = string.format("WARNING: ids exhausted: %d requests reused a task id "
                                  .. "(prepare more tasks)", ran_out)
   end
   report(summary, 201, warnings)
end
