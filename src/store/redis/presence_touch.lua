-- Marks a member present until now + TTL; returns 1 when it was absent (or had expired).
-- KEYS[1]: the presence set (a sorted set scored by expiry time in ms)
-- ARGV[1]: member   ARGV[2]: TTL in ms
-- Time is Redis's own clock, so nodes with skewed clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
-- The set itself lives as long as its longest-lived member.
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], top[2])
return added
