-- GCRA as a slot ledger on Redis server time, shared by every instance.
--
-- Time is cut into slots of one emission interval T (1 / rate). Each send books one slot and starts at that
-- slot's start, so two sends are never closer than T: at most rate × window sends in any window (the GCRA
-- virtual schedule with zero burst tolerance). Booking a slot ahead, rather than only "now", lets a sender
-- wait a bounded time in-process instead of polling.
--
-- Lanes: a share `reserve` of the slots (spread evenly) is held back for the high lane. The bulk lane books
-- a held-back slot only when it starts within one interval and nobody took it (work-conserving), so the
-- bulk lane can never book ahead the capacity the high lane needs, and a high-lane send waits at most about
-- 1 / (reserve × rate) behind any bulk backlog.
--
-- A pause (after Exotel answered 429) moves the first bookable slot past the pause for everyone.
--
-- KEYS[1] slot ledger (zset: member = score = slot index), KEYS[2] pause-until (server µs)
-- ARGV[1] lane ("high" | "bulk"), ARGV[2] interval µs, ARGV[3] max wait µs, ARGV[4] reserve share [0, 1)
-- Returns {1, wait µs, slot} when booked, {0, retry-after µs, reason} when not (reason 1 = paused,
-- 2 = no free slot within the max wait).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local high = ARGV[1] == 'high'
local interval = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])

local first = math.ceil(now / interval)
local paused = false
local pause_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause_until > now then
  local after_pause = math.ceil(pause_until / interval)
  if after_pause > first then
    first = after_pause
    paused = true
  end
end
local last = math.floor((now + max_wait) / interval)
if last < first then
  if paused then
    return {0, pause_until - now, 1}
  end
  return {0, first * interval - now, 2}
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', first - 2))
local booked = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', first),
                                   string.format('%.0f', last))) do
  booked[member] = true
end

for i = first, last do
  local member = string.format('%.0f', i)
  if not booked[member] then
    local start = i * interval
    local held_back = reserve > 0 and math.floor((i + 1) * reserve) > math.floor(i * reserve)
    if high or not held_back or start - now <= interval then
      redis.call('ZADD', KEYS[1], member, member)
      redis.call('PEXPIRE', KEYS[1], math.ceil((max_wait + 2 * interval) / 1000) + 1000)
      return {1, start - now, member}
    end
  end
end
-- Everything bookable up to the max wait is taken: come back when today's bookings have drained.
return {0, (last + 1) * interval - now, 2}
