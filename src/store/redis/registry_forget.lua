-- Removes ARGV[1] from the outbox registry KEYS[1] only while its score (when a node last
-- registered it, Unix ms) is at most ARGV[2]: a node that registered it since keeps it.
-- Returns 1 when removed.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
