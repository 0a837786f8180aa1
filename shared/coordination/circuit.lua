-- Circuit breaker state in one hash, on Redis server time, shared by every instance.
-- closed --(threshold consecutive failures)--> open --(cooldown)--> half_open (one probe at a time)
-- half_open --success--> closed; half_open --failure--> open again.
--
-- KEYS[1] state hash {state, failures, opened_at, probe_until} (µs)
-- ARGV[1] op ("before" | "success" | "failure" | "release"), ARGV[2] threshold, ARGV[3] cooldown µs,
-- ARGV[4] probe TTL µs
-- "before" returns {1, 0, state} (call), {2, 0, state} (call as the probe) or {0, retry-after µs, state}.
-- "success"/"failure" return {1, failures, new state}.
-- "release" (the probe never called) frees the probe slot while half-open: the next caller probes at once.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local probe_ttl = tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
redis.call('EXPIRE', KEYS[1], 86400)

local function fmt(n) return string.format('%.0f', n) end

if op == 'before' then
  if state == 'closed' then
    return {1, 0, state}
  end
  if state == 'open' and now < opened_at + cooldown then
    return {0, opened_at + cooldown - now, state}
  end
  if state == 'half_open' and now < probe_until then
    return {0, probe_until - now, state}
  end
  -- cool-down over (or the last probe never reported back): this caller is the single probe
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', fmt(now + probe_ttl))
  return {2, 0, 'half_open'}
elseif op == 'release' then
  if state == 'half_open' then
    redis.call('HSET', KEYS[1], 'probe_until', 0)
  end
  return {1, failures, state}
elseif op == 'success' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'probe_until', 0)
  return {1, 0, 'closed'}
else
  failures = failures + 1
  if state == 'half_open' or (state == 'closed' and failures >= threshold) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'failures', failures, 'opened_at', fmt(now), 'probe_until', 0)
    return {1, failures, 'open'}
  end
  redis.call('HSET', KEYS[1], 'failures', failures)
  return {1, failures, state}
end
