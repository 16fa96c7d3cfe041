-- Rebuilds a log Redis lost: raises the sequence counter to at least ARGV[1] and, when the
-- log has no entries, adds the given ones with their own sequence numbers as ids.
-- KEYS[1]: the log   KEYS[2]: its sequence counter
-- ARGV[1]: last sequence number handed out   ARGV[2]: entries kept (0 = all)
-- ARGV[3]: TTL in ms (0 = none)   ARGV[4]: '1' keeps the counter without a TTL
-- ARGV[5], ARGV[6], ...: seq, payload pairs, ascending
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = tonumber(ARGV[1])
if cur < last then
  redis.call('SET', KEYS[2], last)
  cur = last
end
if redis.call('XLEN', KEYS[1]) == 0 then
  for i = 5, #ARGV, 2 do
    if tonumber(ARGV[i]) <= cur then
      -- An id at or below a stream's last one is refused: such an entry is skipped.
      redis.pcall('XADD', KEYS[1], ARGV[i] .. '-0', 'p', ARGV[i + 1])
    end
  end
  if tonumber(ARGV[2]) > 0 then
    redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[2])
  end
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if ARGV[4] == '1' then
    redis.call('PERSIST', KEYS[2])
  else
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
return 1
