-- Argo CD health check for podq.dev/v1alpha1 CronJob (Lua 5.1, as Argo CD runs it).
-- Degraded: the schedule or time zone cannot be used (Stalled). Suspended: spec.suspend.
-- Progressing: not yet seen by the operator. Healthy: scheduling. The health of each
-- run is that of its child Job.
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

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "CronJob is suspended"
  return hs
end

local generation = obj.metadata.generation
local observed = nil
if obj.status ~= nil then
  observed = obj.status.observedGeneration
end
local ready = condition("Ready")
if ready == nil or (generation ~= nil and observed ~= nil and observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the podq operator to observe the CronJob"
  return hs
end

if ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end

hs.status = "Healthy"
local parts = {}
if obj.status.lastScheduleTime ~= nil then
  table.insert(parts, "last run " .. obj.status.lastScheduleTime)
end
if obj.status.nextScheduleTime ~= nil then
  table.insert(parts, "next run " .. obj.status.nextScheduleTime)
end
if obj.status.activeCount ~= nil and obj.status.activeCount > 0 then
  table.insert(parts, tostring(obj.status.activeCount) .. " active")
end
if #parts > 0 then
  hs.message = "Scheduling: " .. table.concat(parts, ", ")
else
  hs.message = "Scheduling"
end
return hs
