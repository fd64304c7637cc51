-- POST /api/v1/tasks with dispatch true: the task and its payment order in one call.
--
--   wrk -t1 -c64 -d10s --latency -s bench/create_task.lua http://127.0.0.1:PORT -- PREFIX
--
-- Every request has its own task_id, PREFIX-<thread>-<n>; use a new PREFIX for every run
-- against the same database. Env: BENCH_API_KEY, BENCH_API_SECRET, BENCH_CALLBACK_URL.

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

local headers = {
   ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
   ["X-API-Secret"] = os.getenv("BENCH_API_SECRET"),
   ["Content-Type"] = "application/json",
}
local body_format = '{"task_id":"%s","title":"Bench task","amount":5000,"currency":"CNY",'
   .. '"payment_method":"alipay","return_url":"https://your-app.com/payment/success",'
   .. '"callback_url":"'
   .. (os.getenv("BENCH_CALLBACK_URL") or "http://127.0.0.1:9/webhooks/payment")
   .. '","dispatch":true}'

prefix = "bench"
sent = 0
bad = {}
sample = ""

function init(args)
   prefix = (args[1] or "bench") .. "-" .. tid
end

function request()
   sent = sent + 1
   local body = string.format(body_format, prefix .. "-" .. sent)
   return wrk.format("POST", "/api/v1/tasks", headers, body)
end

function response(status, hdrs, body)
   if status ~= 201 then
      bad[status] = (bad[status] or 0) + 1
      if sample == "" then
         sample = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

function done(summary, latency, requests)
   local total, statuses, first = 0, {}, ""
   for _, t in ipairs(threads) do
      for status, count in pairs(t:get("bad")) do
         statuses[status] = (statuses[status] or 0) + count
         total = total + count
      end
      if first == "" then first = t:get("sample") end
   end
   io.write(string.format("scenario create_task: %d threads\n", #threads))
   io.write(string.format("non-201 responses: %d\n", total))
   for status, count in pairs(statuses) do
      io.write(string.format("  status %d: %d\n", status, count))
   end
   if first ~= "" then io.write("  first: " .. first .. "\n") end
   io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
                          summary.errors.connect, summary.errors.read, summary.errors.write,
                          summary.errors.timeout))
end
