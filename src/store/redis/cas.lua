-- Compare-and-swap: replaces KEYS[1] with ARGV[2] only while it still holds ARGV[1], and
-- in the same atomic step publishes ARGV[4] on channel ARGV[3] (when ARGV[3] ~= '') and
-- adds the new value to the outbox stream KEYS[2] as a record of kind ARGV[6] and scope
-- ARGV[7] (when ARGV[6] ~= ''), so exactly one writer wins a race and its event and
-- record are emitted exactly once.
-- ARGV[5]: TTL in ms for the new value (0 = none). Returns 1 when swapped.
-- ARGV[8]: the publish command (PUBLISH, or SPUBLISH on a Redis Cluster).
-- Both keys are in one slot (KEYS[2] repeats KEYS[1] when there is no outbox record).
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'k', ARGV[6], 's', ARGV[7], 'q', 0, 'd', ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call(ARGV[8], ARGV[3], ARGV[4])
end
return 1
