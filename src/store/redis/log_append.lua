-- Appends one entry to an ordered log and returns its sequence number, atomically with
-- trimming, expiry, publishing and the outbox, so every node sees one total order and the
-- persistence writer sees every acknowledged entry.
-- KEYS[1]: the log (a Redis Stream, entry ids "<seq>-0")   KEYS[2]: its sequence counter
-- KEYS[3]: idempotency key (used when ARGV[5] ~= '0')       KEYS[4]: the outbox stream
-- ARGV[1]: payload   ARGV[2]: entries kept (0 = all)   ARGV[3]: TTL in ms (0 = none)
-- ARGV[4]: channel that receives "<seq>\n<payload>" ('' = no publish)
-- ARGV[5]: idempotency window in ms; when KEYS[3] exists its sequence number is returned
--          and nothing is appended, otherwise it is set to the new one ('0' = no check)
-- ARGV[6], ARGV[7]: outbox record kind and scope ('' = no outbox record)
-- ARGV[8]: '1' keeps the sequence counter when the log expires (no TTL on KEYS[2])
-- ARGV[9]: the publish command: PUBLISH, or SPUBLISH on a Redis Cluster (the channel
--          carries the log's hash tag, so it belongs to this slot's shard)
-- Every key is in one slot (a Redis Cluster requires it): unused ones repeat KEYS[2].
local once = ARGV[5] ~= '0'
if once then
  local earlier = redis.call('GET', KEYS[3])
  if earlier then
    return tonumber(earlier)
  end
end
local seq = redis.call('INCR', KEYS[2])
if seq == 1 then
  -- The counter is new but the log may not be (counter evicted or restored): continue
  -- after the log's last entry rather than reuse its ids.
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local top = tonumber(string.match(last[1][1], '^(%d+)'))
    if top >= seq then
      seq = top + 1
      redis.call('SET', KEYS[2], seq)
    end
  end
end
local id = seq .. '-0'
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], id, 'p', ARGV[1])
else
  redis.call('XADD', KEYS[1], id, 'p', ARGV[1])
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if ARGV[8] == '1' then
    redis.call('PERSIST', KEYS[2])
  else
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[4], '*', 'k', ARGV[6], 's', ARGV[7], 'q', seq, 'd', ARGV[1])
end
if ARGV[4] ~= '' then
  redis.call(ARGV[9], ARGV[4], seq .. '\n' .. ARGV[1])
end
if once then
  redis.call('SET', KEYS[3], seq, 'PX', ARGV[5])
end
return seq
