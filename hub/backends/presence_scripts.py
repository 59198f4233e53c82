"""The Lua scripts of Redis presence.

Key layout and semantics: ``hub.backends.redis_presence``. Each operation is one script,
so exactly one caller observes each online/offline transition, across every replica.
The read that needs no running hub (``COUNT_SCRIPT``, ``count_users``) and the key
names (``presence_keys``) live in the publish helper, ``hubnotify.presence``, which
backends use without the hub; they are re-exported here.
"""

from __future__ import annotations

from hubnotify.presence import COUNT_SCRIPT, count_users, presence_keys

__all__ = [
    "ADD_SCRIPT",
    "COUNT_SCRIPT",
    "HEARTBEAT_SCRIPT",
    "REAP_SCRIPT",
    "REMOVE_SCRIPT",
    "REPLICAS_SCRIPT",
    "count_users",
    "presence_keys",
]

# KEYS: replicas zset, replica hash, user hash. ARGV: replica, conn id, user.
# Returns {live connections of the user, 1 if the user just went online}.
# Shared by both scripts: the user's connections (hash KEYS[3], conn → replica) whose
# replica's lease (score in the zset KEYS[1], ms) has not run out.
_LIVE = """
local function live_connections()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local live = 0
  local conns = redis.call('HGETALL', KEYS[3])
  for i = 2, #conns, 2 do
    local deadline = redis.call('ZSCORE', KEYS[1], conns[i])
    if deadline and tonumber(deadline) >= now then live = live + 1 end
  end
  return live
end
"""

ADD_SCRIPT = (
    _LIVE
    + """
local became = 0
if redis.call('EXISTS', KEYS[3]) == 0 then became = 1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
return {live_connections(), became}
"""
)

# KEYS: replicas zset, replica hash, user hash. ARGV: conn id.
# Returns {live connections of the user left, 1 if the user just went offline}.
REMOVE_SCRIPT = (
    _LIVE
    + """
local removed = redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local went = 0
if redis.call('EXISTS', KEYS[3]) == 0 then
  if removed == 1 then went = 1 end
  return {0, went}
end
return {live_connections(), went}
"""
)

# KEYS: replicas zset. ARGV: replica, lease ms. Renews the lease; returns 0 when the
# replica had been reaped (its lease was gone), 1 otherwise.
HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local had = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if had then return 1 end
return 0
"""

# KEYS: replicas zset. ARGV: key prefix P, then either a replica id to drop
# unconditionally ("self") or nothing (reap the first replica whose lease expired).
# Returns {replica reaped or '', user, user, ...} — the users who went offline.
REAP_SCRIPT = """
local replica = ARGV[2]
if replica == nil then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 1)
  if #dead == 0 then return {''} end
  replica = dead[1]
end
local result = {replica}
local rkey = ARGV[1] .. 'r:' .. replica
local conns = redis.call('HGETALL', rkey)
for i = 1, #conns, 2 do
  local ukey = ARGV[1] .. 'u:' .. conns[i + 1]
  redis.call('HDEL', ukey, conns[i])
  if redis.call('EXISTS', ukey) == 0 then result[#result + 1] = conns[i + 1] end
end
redis.call('DEL', rkey)
redis.call('ZREM', KEYS[1], replica)
return result
"""

# KEYS: replicas zset. ARGV: key prefix P. Returns {replica, count, ...} of live replicas.
REPLICAS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local result = {}
for _, r in ipairs(live) do
  result[#result + 1] = r
  result[#result + 1] = redis.call('HLEN', ARGV[1] .. 'r:' .. r)
end
return result
"""
