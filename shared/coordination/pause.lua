-- Pause every sender until server time now + ARGV[1] µs (never shortens a longer pause).
-- KEYS[1] pause-until key (server µs). Returns the remaining pause in µs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local target = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if target > current then
  redis.call('SET', KEYS[1], string.format('%.0f', target), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1)
  return target - now
end
return current - now
