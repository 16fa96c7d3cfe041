-- Removes a member; returns 1 when it was present and not expired.
-- KEYS[1]: the presence set   ARGV[1]: member
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if score and tonumber(score) > now then
  return 1
end
return 0
