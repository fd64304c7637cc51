-- Shared by the wrk scripts (loaded with dofile by each): thread bookkeeping, the API
-- credentials, counting unexpected answers, and the report run.sh reads.
-- Env: BENCH_API_KEY, BENCH_API_SECRET, BENCH_CALLBACK_URL.

threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

function api_headers(json)
   local headers = {
      ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
      ["X-API-Secret"] = os.getenv("BENCH_API_SECRET"),
   }
   if json then headers["Content-Type"] = "application/json" end
   return headers
end

CALLBACK_URL = os.getenv("BENCH_CALLBACK_URL") or "http://127.0.0.1:9/webhooks/payment"

-- The ids a read scenario cycles over (one per line of `path`); each thread starts at a
-- different place in the list. `ids` and `sent` are globals: done() reads them.
ids = {}
sent = 0

function load_ids(path, what)
   for line in io.lines(path) do
      if line ~= "" then table.insert(ids, line) end
   end
   if #ids == 0 then error("no " .. what .. " ids in " .. path) end
   sent = (tid * 7919) % #ids
end

function next_id()
   sent = sent + 1
   return ids[((sent - 1) % #ids) + 1]
end

bad = {}      -- status -> count, for every answer other than the expected one
sample = ""   -- the first unexpected answer's body

-- Installs response(): counts every answer whose status is not `expected` and, when a
-- `marker` is given, every one whose body lacks it (EasyPay answers errors with a 200: such
-- an answer is counted as status 299).
function expect_status(expected, marker)
   function response(status, hdrs, body)
      local wrong = status ~= expected
      if not wrong and marker and not string.find(body or "", marker, 1, true) then
         wrong, status = true, 299
      end
      if wrong then
         bad[status] = (bad[status] or 0) + 1
         if sample == "" then
            sample = status .. " " .. string.sub(body or "", 1, 300)
         end
      end
   end
end

-- Writes the unexpected answers of all threads ("non-<expected> responses: N", which
-- run.sh reads), any warnings, and the socket errors.
function report(summary, expected, warnings)
   local total, statuses, first = 0, {}, ""
   for _, t in ipairs(threads) do
      for status, count in pairs(t:get("bad")) do
         statuses[status] = (statuses[status] or 0) + count
         total = total + count
      end
      if first == "" then first = t:get("sample") end
   end
   io.write(string.format("non-%d responses: %d\n", expected, total))
   for status, count in pairs(statuses) do
      io.write(string.format("  status %d: %d\n", status, count))
   end
   if first ~= "" then io.write("  first: " .. first .. "\n") end
   for _, line in ipairs(warnings or {}) do io.write(line .. "\n") end
   io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
                          summary.errors.connect, summary.errors.read, summary.errors.write,
                          summary.errors.timeout))
end
