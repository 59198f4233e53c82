"""The Lua scripts of read state over Redis (hub/backends/redis_reads.py, docs/protocol.md §9).

Each runs on one topic's stream and one user's read hash, atomically, so a count never
mixes a stream and a read state from different moments. Both keys share the topic's
hash slot once the stream key carries ``{<topic>}`` (the cluster convention); the de-dup
keys the shared trim deletes are named from ``ARGV`` as in hub/backends/redis_history.py.

The read hash: field ``c`` is the cursor (everything up to it is read), every other
field an offset read on its own (value ``1``). ``state`` folds and prunes it against the
stream: a mark that is not a retained entry after the cursor is deleted.
"""

from __future__ import annotations

from typing import Final

from hub.backends.redis_history import _TRIM

# Offsets compared as two decimal strings (no leading zeros: Redis ids and str(Offset)):
# exact past 2^53, where Lua numbers are not.
_STATE: Final = (
    _TRIM
    + """
local function parts(id)
  local dash = string.find(id, '-', 1, true)
  return string.sub(id, 1, dash - 1), string.sub(id, dash + 1)
end
local function numlt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function lt(x, y)
  local xm, xs = parts(x)
  local ym, ys = parts(y)
  if xm ~= ym then return numlt(xm, ym) end
  return numlt(xs, ys)
end
local function is_entry(s, id)
  return #redis.call('XRANGE', s, id, id) > 0
end
-- cursor, sorted marks, unread count; prunes marks that are not retained entries after the cursor
local function state(s, r)
  local cursor = redis.call('HGET', r, 'c') or '0-0'
  local n = 0
  local first = redis.call('XRANGE', s, '-', '+', 'COUNT', 1)
  if #first > 0 then
    if cursor == '0-0' or lt(cursor, first[1][1]) then
      n = redis.call('XLEN', s)
    else
      n = #redis.call('XRANGE', s, '(' .. cursor, '+')
    end
  end
  local marks = {}
  for _, f in ipairs(redis.call('HKEYS', r)) do
    if f ~= 'c' then
      if lt(cursor, f) and is_entry(s, f) then marks[#marks + 1] = f else redis.call('HDEL', r, f) end
    end
  end
  table.sort(marks, lt)
  return cursor, marks, n - #marks
end
"""
)

#: KEYS: stream, read hash. ARGV: de-dup prefix, maxlen, horizon. Returns the unread count.
UNREAD: Final = (
    _STATE
    + """
trim(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local cursor, marks, n = state(KEYS[1], KEYS[2])
return n
"""
)

#: KEYS: stream, read hash. ARGV: de-dup prefix, maxlen, horizon, ttl (ms, 0: none), up_to
#: ('' for none), then the offsets to mark. Returns {cursor, marks, unread}.
MARK: Final = (
    _STATE
    + """
local s, r = KEYS[1], KEYS[2]
trim(s, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local cursor = redis.call('HGET', r, 'c') or '0-0'
local up_to = ARGV[5]
if up_to ~= '' then
  local last = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)
  if #last > 0 then
    if lt(last[1][1], up_to) then up_to = last[1][1] end
    if lt(cursor, up_to) then
      cursor = up_to
      redis.call('HSET', r, 'c', cursor)
    end
  end
end
for j = 6, #ARGV do
  if lt(cursor, ARGV[j]) and is_entry(s, ARGV[j]) then redis.call('HSET', r, ARGV[j], '1') end
end
local c, marks, n = state(s, r)
local ttl = tonumber(ARGV[4])
if ttl > 0 and redis.call('EXISTS', r) == 1 then redis.call('PEXPIRE', r, ttl) end
return {c, marks, n}
"""
)

#: KEYS: stream, read hash. ARGV: de-dup prefix, maxlen, horizon, end ('+' or '(' .. offset),
#: limit. Returns {cursor, marks, entries newest first}.
PAGE: Final = (
    _STATE
    + """
local s, r = KEYS[1], KEYS[2]
trim(s, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local cursor, marks, n = state(s, r)
return {cursor, marks, redis.call('XREVRANGE', s, ARGV[4], '-', 'COUNT', tonumber(ARGV[5]))}
"""
)
