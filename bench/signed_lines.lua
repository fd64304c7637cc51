-- Shared by the scenarios that send prepared lines (task ids; the facades' signed requests)
-- of FILE (one a line, made by prepare.py), split between the wrk threads (line i to thread
-- i mod THREADS), each sent once; a thread that runs out starts over (duplicates: reported
-- as exhausted).

lines = {}
sent = 0
exhausted = 0

function init(args)
   local file, nthreads = args[1], tonumber(args[2] or "1")
   local n = 0
   for line in io.lines(file) do
      if n % nthreads == tid and line ~= "" then
         table.insert(lines, line)
      end
      n = n + 1
   end
   if #lines == 0 then
      error("no lines for thread " .. tid .. " in " .. file)
   end
end

function next_line()
   sent = sent + 1
   if sent > #lines then
      exhausted = exhausted + 1
   end
   return lines[((sent - 1) % #lines) + 1]
end

function report_lines(name, summary)
   local ran_out = 0
   for _, t in ipairs(threads) do ran_out = ran_out + t:get("exhausted") end
   io.write(string.format("scenario %s: %d threads\n", name, #threads))
   local warnings = {}
   if ran_out > 0 then
      warnings[1] = string.format("WARNING: ids exhausted: %d requests sent again", ran_out)
   end
   report(summary, 200, warnings)
end
