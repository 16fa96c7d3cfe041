-- Deletes the stream KEYS[1] (and its consumer group) when it holds no entry.
-- Returns 1 when deleted.
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
