-- Generic cell rate algorithm: one key's theoretical arrival time (TAT), in microseconds
-- of Redis's own clock, so every node shares one limit.
-- KEYS[1]: the limiter   ARGV[1]: emission interval T in µs (1 / rate)   ARGV[2]: burst
-- Returns {1, 0} when allowed, {0, retry_after_µs} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, string.format('%.0f', allow_at - now)}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
return {1, '0'}
