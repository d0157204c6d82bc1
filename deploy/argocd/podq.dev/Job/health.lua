-- Argo CD health check for podq.dev/v1alpha1 Job (Lua 5.1, as Argo CD runs it).
-- Healthy: the job completed. Degraded: it failed, was aborted, or the operator cannot
-- handle it (Stalled). Progressing: not yet seen by the operator, queued, scheduled,
-- waiting for a retry, running or aborting.
local hs = {}

local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end

-- the last non-empty line of a traceback: the exception itself
local function lastLine(text)
  local last = nil
  if text ~= nil then
    for line in string.gmatch(text, "[^\n]+") do
      if string.find(line, "%S") then
        last = line
      end
    end
  end
  if last ~= nil then
    last = string.gsub(last, "^%s+", "")
  end
  return last
end

local function attempts()
  if obj.status.attempts ~= nil and obj.status.attempts > 1 then
    return " after " .. tostring(obj.status.attempts) .. " attempts"
  end
  return ""
end

if obj.status == nil or obj.status.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the podq operator to enqueue the job"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the podq operator to observe generation " .. tostring(generation)
  return hs
end

local state = obj.status.status

if state == "complete" then
  hs.status = "Healthy"
  hs.message = "Job completed" .. attempts()
  return hs
end

if state == "failed" or state == "aborted" then
  hs.status = "Degraded"
  -- the operator's Failed condition says what happened, in one line
  local failed = condition("Failed")
  if failed ~= nil and failed.status == "True" and failed.message ~= nil and failed.message ~= "" then
    hs.message = failed.message
    return hs
  end
  if state == "aborted" then
    hs.message = "Job aborted" .. attempts()
  else
    hs.message = "Job failed" .. attempts()
  end
  local detail = lastLine(obj.status.error)
  if detail ~= nil then
    hs.message = hs.message .. ": " .. detail
  end
  return hs
end

-- not finished, but the operator cannot go on with it
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end

hs.status = "Progressing"
if state == "active" then
  local msg = "Job running"
  if obj.status.worker ~= nil then
    msg = msg .. " on " .. obj.status.worker
  end
  if obj.status.attempts ~= nil then
    msg = msg .. " (attempt " .. tostring(obj.status.attempts) .. ")"
  end
  if obj.status.progress ~= nil and obj.status.progress > 0 then
    msg = msg .. ", " .. tostring(math.floor(obj.status.progress * 100 + 0.5)) .. "% done"
  end
  hs.message = msg
elseif state == "aborting" then
  hs.message = "Job aborting"
elseif state == "queued" then
  if obj.status.nextRetryTime ~= nil then
    hs.message = "Job waiting to retry at " .. obj.status.nextRetryTime
    local err = lastLine(obj.status.error)
    if err ~= nil then
      hs.message = hs.message .. " (last error: " .. err .. ")"
    end
  elseif obj.status.scheduledTime ~= nil then
    hs.message = "Job scheduled for " .. obj.status.scheduledTime
  else
    hs.message = "Job queued"
  end
elseif state == "new" then
  hs.message = "Waiting for the podq operator to enqueue the job"
else
  hs.message = "Job status " .. tostring(state)
end
return hs
