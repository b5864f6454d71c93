"""The Lua scripts of the Redis result cache (:mod:`service.redis_store`): every write
that touches several keys is one script, so a replica killed mid-write leaves each entry
whole or absent, and the indexes never point at something gone."""

# Shared by the scripts that remove a benchmark: its body, plots, index entries, sizes
# and the models no other benchmark uses.
DELETE_FUNCTION = """
local p = ARGV[1]
local function delete(id)
  local found = redis.call('EXISTS', p .. 'bench:' .. id)
  local size = tonumber(redis.call('HGET', p .. 'sizes', id) or '0')
  redis.call('DECRBY', p .. 'total', size)
  redis.call('HDEL', p .. 'sizes', id)
  redis.call('DEL', p .. 'bench:' .. id, p .. 'plots:' .. id)
  redis.call('ZREM', p .. 'created', id)
  redis.call('ZREM', p .. 'accessed', id)
  for _, mid in ipairs(redis.call('SMEMBERS', p .. 'models:' .. id)) do
    redis.call('SREM', p .. 'users:' .. mid, id)
    if redis.call('SCARD', p .. 'users:' .. mid) == 0 then
      redis.call('DEL', p .. 'model:' .. mid)
    end
  end
  redis.call('DEL', p .. 'models:' .. id)
  redis.call('PUBLISH', p .. 'invalidate', id)
  return found
end
local function evict(max)
  local n = 0
  while tonumber(redis.call('GET', p .. 'total') or '0') > max do
    local oldest = redis.call('ZRANGE', p .. 'accessed', 0, 0)
    if #oldest == 0 then break end
    delete(oldest[1])
    n = n + 1
  end
  return n
end
"""

# ARGV: prefix, id, body, now, max_bytes, then (model id, model bytes) pairs.
PUT = (
    DELETE_FUNCTION
    + """
local id, body, now = ARGV[2], ARGV[3], ARGV[4]
local size = #body
for i = 6, #ARGV, 2 do size = size + #ARGV[i + 1] end
for _, png in ipairs(redis.call('HVALS', p .. 'plots:' .. id)) do size = size + #png end
local old = tonumber(redis.call('HGET', p .. 'sizes', id) or '0')
redis.call('HSET', p .. 'sizes', id, size)
redis.call('INCRBY', p .. 'total', size - old)
redis.call('SET', p .. 'bench:' .. id, body)
redis.call('ZADD', p .. 'created', 'NX', now, id)
redis.call('ZADD', p .. 'accessed', now, id)
for i = 6, #ARGV, 2 do
  redis.call('SET', p .. 'model:' .. ARGV[i], ARGV[i + 1])
  redis.call('SADD', p .. 'users:' .. ARGV[i], id)
  redis.call('SADD', p .. 'models:' .. id, ARGV[i])
end
return evict(tonumber(ARGV[5]))
"""
)

# ARGV: prefix, id.
DELETE = DELETE_FUNCTION + "return delete(ARGV[2])\n"

# ARGV: prefix, id, key, png, max_bytes. Stored only beside a stored benchmark, and
# counted once however many replicas store it.
PUT_PLOT = (
    DELETE_FUNCTION
    + """
local id, key, png = ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', p .. 'bench:' .. id) == 0 then return 0 end
local old = redis.call('HSTRLEN', p .. 'plots:' .. id, key)
redis.call('HSET', p .. 'plots:' .. id, key, png)
redis.call('HINCRBY', p .. 'sizes', id, #png - old)
redis.call('INCRBY', p .. 'total', #png - old)
return evict(tonumber(ARGV[5]))
"""
)

# ARGV: prefix, member ("kind:key"), data, now, max_bytes. Documents have their own LRU
# under the same bound, as in the embedded store.
PUT_DOCUMENT = """
local p, member, data = ARGV[1], ARGV[2], ARGV[3]
local old = tonumber(redis.call('HGET', p .. 'doc-sizes', member) or '0')
redis.call('SET', p .. 'doc:' .. member, data)
redis.call('HSET', p .. 'doc-sizes', member, #data)
redis.call('INCRBY', p .. 'doc-total', #data - old)
redis.call('ZADD', p .. 'doc-accessed', ARGV[4], member)
local max = tonumber(ARGV[5])
while tonumber(redis.call('GET', p .. 'doc-total') or '0') > max do
  local oldest = redis.call('ZRANGE', p .. 'doc-accessed', 0, 0)
  if #oldest == 0 then break end
  local victim = oldest[1]
  local size = tonumber(redis.call('HGET', p .. 'doc-sizes', victim) or '0')
  redis.call('DECRBY', p .. 'doc-total', size)
  redis.call('HDEL', p .. 'doc-sizes', victim)
  redis.call('ZREM', p .. 'doc-accessed', victim)
  redis.call('DEL', p .. 'doc:' .. victim)
end
return 0
"""

# A lease's value is "<owner> <process>". KEYS[1]: the lease; ARGV: owner, ttl in ms.
RENEW = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1]: the lease; ARGV[1]: the exact value seen (a dead process's).
DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
