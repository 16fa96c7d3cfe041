-- Raises the integer at KEYS[1] to ARGV[1] if that is larger; returns the resulting value.
-- ARGV[2]: TTL in ms applied on every call (0 = keep).
local cur = tonumber(redis.call('GET', KEYS[1]) or '-9007199254740992')
local v = tonumber(ARGV[1])
if v > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  cur = v
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return cur
