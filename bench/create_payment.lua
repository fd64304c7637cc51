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

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

local path = "/api/v1/payment/create"
local headers = {
   ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
   ["X-API-Secret"] = os.getenv("BENCH_API_SECRET"),
   ["Content-Type"] = "application/json",
}
local body_format = '{"task_id":"%s","amount":5000,"currency":"CNY","payment_method":"alipay",'
   .. '"return_url":"https://your-app.com/payment/success","callback_url":"'
   .. (os.getenv("BENCH_CALLBACK_URL") or "http://127.0.0.1:9/webhooks/payment") .. '"}'

ids = {}
sent = 0
exhausted = 0
bad = {}      -- status -> count, for every answer other than 201
sample = ""   -- the first unexpected answer's body

function init(args)
   local file, nthreads = args[1], tonumber(args[2] or "1")
   local n = 0
   for line in io.lines(file) do
      if n % nthreads == tid and line ~= "" then
         table.insert(ids, line)
      end
      n = n + 1
   end
   if #ids == 0 then
      error("no task ids for thread " .. tid .. " in " .. file)
   end
end

function request()
   sent = sent + 1
   if sent > #ids then
      exhausted = exhausted + 1
   end
   local id = ids[((sent - 1) % #ids) + 1]
   return wrk.format("POST", path, headers, string.format(body_format, id))
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
   local total, ids_total, ran_out, statuses, first, lines_used = 0, 0, 0, {}, "", 0
   for i, t in ipairs(threads) do
      local n_ids, n_sent = #t:get("ids"), t:get("sent")
      ids_total = ids_total + n_ids
      -- this thread's last id was on line (k - 1) * #threads + tid + 1 of the file
      local k = math.min(n_sent, n_ids)
      if k > 0 then lines_used = math.max(lines_used, (k - 1) * #threads + i) end
      ran_out = ran_out + t:get("exhausted")
      for status, count in pairs(t:get("bad")) do
         statuses[status] = (statuses[status] or 0) + count
         total = total + count
      end
      if first == "" then first = t:get("sample") end
   end
   io.write(string.format("scenario create_payment: %d task ids for %d threads\n",
                          ids_total, #threads))
   io.write(string.format("task lines used: %d\n", lines_used))
   io.write(string.format("non-201 responses: %d\n", total))
   for status, count in pairs(statuses) do
      io.write(string.format("  status %d: %d\n", status, count))
   end
   if first ~= "" then io.write("  first: " .. first .. "\n") end
   if ran_out > 0 then
      io.write(string.format("WARNING: ids exhausted: %d requests reused a task id "
                             .. "(prepare more tasks)\n", ran_out))
   end
   io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
                          summary.errors.connect, summary.errors.read, summary.errors.write,
                          summary.errors.timeout))
end
