-- Reads the members present now. ARGV[1] = 'count' returns their number; 'list' returns
-- them (the caller sorts and pages).
-- KEYS[1]: the presence set
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'count' then
  return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
