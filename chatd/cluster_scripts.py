"""The Lua scripts chatd runs in Redis, and the key layout they share (docs/cluster.md).

Every change to shared state is one script: Redis runs a script atomically, so what it
writes and the message it publishes about it happen at one point of the single order
in which every node sees the channel. Keys (``P`` = ``chatd:``):

- ``P alive:NODE``   "1" with a PX expiry the node refreshes (its liveness);
- ``P nodes``        hash NODE -> "1": nodes that have registered and not been reaped;
- ``P users:NODE``   hash CID -> JSON {n, u, r, rooms}: that node's registered users;
- ``P nick:f:FOLD`` / ``P nick:s:SKELETON``  NODE holding the nick (free if NODE is dead);
- ``P topic``        hash folded room -> topic;
- ``P s:ROOM``       the room's stream (its history); entry field ``m`` = JSON message;
- channel ``P ev``   every change, as ``KIND NODE ARG JSON``; ``P pm:NODE`` private messages.

A stream id ``MS-SEQ`` is the message's ``mid`` = MS * 1024 + SEQ (see :func:`mid_of`).
"""

from __future__ import annotations

import hashlib

__all__ = ["SCRIPTS", "sha", "PREFIX", "CHANNEL", "mid_of", "stream_id"]

PREFIX = "chatd:"
CHANNEL = PREFIX + "ev"
#: SEQ of a stream id must stay below this for the mid to be unique (ms * 1024 + seq).
SEQ_LIMIT = 1024

# Claim a nick (hello or a nick change): free unless held by another *live* node;
# refused, the reply is minus the milliseconds that node has left to prove it lives.
CLAIM = """
local me = ARGV[1]
for i = 1, 2 do
  local h = redis.call('GET', KEYS[i])
  if h and h ~= me then
    local left = redis.call('PTTL', 'chatd:alive:' .. h)
    if left ~= -2 then return -math.max(left, 1) end  -- held: minus the holder's PTTL
  end
end
for i = 4, 5 do
  if KEYS[i] and redis.call('GET', KEYS[i]) == me then redis.call('DEL', KEYS[i]) end
end
redis.call('SET', KEYS[1], me)
redis.call('SET', KEYS[2], me)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# Join, part, topic, quit: the user's new state, maybe a topic, maybe nicks released,
# the event; a join gets the room's last messages back (the replay, exactly those
# before it in the channel's order).
UPDATE = """
local me = ARGV[1]
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[2])
else redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
if ARGV[7] ~= '' then
  if ARGV[8] == '' then redis.call('HDEL', 'chatd:topic', ARGV[7])
  else redis.call('HSET', 'chatd:topic', ARGV[7], ARGV[8]) end
end
for i = 3, 4 do
  if KEYS[i] and redis.call('GET', KEYS[i]) == me then redis.call('DEL', KEYS[i]) end
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
if tonumber(ARGV[6]) > 0 then
  return redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[6])
end
return {}
"""

# A room message: stored (XADD) and published in one step; the reply is its stream id.
SAY = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[2])
local dash = string.find(id, '-', 1, true)
local ms = tonumber(string.sub(id, 1, dash - 1))
if tonumber(string.sub(id, dash + 1)) >= 1024 then
  redis.call('XDEL', KEYS[1], id)
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], string.format('%d-*', ms + 1),
                  'm', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], 'say ' .. ARGV[4] .. ' ' .. id .. ' ' .. ARGV[2])
return id
"""

# Refresh this node's liveness; reap dead nodes (their users quit everywhere).
# Returns -1 if this node was itself reaped (it must start over under a new id).
HEARTBEAT = """
local me, ttl, registered, reap = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if registered == '1' and redis.call('HEXISTS', 'chatd:nodes', me) == 0 then return -1 end
redis.call('SET', 'chatd:alive:' .. me, '1', 'PX', ttl)
redis.call('HSET', 'chatd:nodes', me, '1')
local reaped = 0
if reap == '1' then
  for _, n in ipairs(redis.call('HKEYS', 'chatd:nodes')) do
    if n ~= me and redis.call('EXISTS', 'chatd:alive:' .. n) == 0 then
      redis.call('DEL', 'chatd:users:' .. n)
      redis.call('HDEL', 'chatd:nodes', n)
      redis.call('PUBLISH', ARGV[5], 'reap ' .. n .. ' - {}')
      reaped = reaped + 1
    end
  end
end
return reaped
"""

# (Re)connected: register, write this node's true state, announce it, and read
# everything else (other nodes' users, topics, room messages missed) in one step.
SYNC = """
local me, ttl, registered = ARGV[1], ARGV[2], ARGV[3]
if registered == '1' and redis.call('HEXISTS', 'chatd:nodes', me) == 0 then
  return cjson.encode({reaped = true})
end
redis.call('SET', 'chatd:alive:' .. me, '1', 'PX', ttl)
redis.call('HSET', 'chatd:nodes', me, '1')
local state = cjson.decode(ARGV[5])
local hash = 'chatd:users:' .. me
redis.call('DEL', hash)
for cid, user in pairs(state.users) do redis.call('HSET', hash, cid, user) end
for _, key in ipairs(state.release) do
  if redis.call('GET', key) == me then redis.call('DEL', key) end
end
for _, key in ipairs(state.nicks) do
  local h = redis.call('GET', key)
  if not h or h == me or redis.call('EXISTS', 'chatd:alive:' .. h) == 0 then
    redis.call('SET', key, me)
  end
end
redis.call('PUBLISH', ARGV[4], 'state ' .. me .. ' - ' .. ARGV[5])
local nodes = {}
for _, n in ipairs(redis.call('HKEYS', 'chatd:nodes')) do
  if n ~= me then nodes[n] = redis.call('HGETALL', 'chatd:users:' .. n) end
end
local msgs = {}
for i = 7, #ARGV, 2 do
  msgs[#msgs + 1] = redis.call('XRANGE', ARGV[i], ARGV[i + 1], '+', 'COUNT', ARGV[6])
end
return cjson.encode({nodes = nodes, topics = redis.call('HGETALL', 'chatd:topic'),
                     msgs = msgs})
"""

# A node stopping normally: its users quit everywhere now, not after the TTL.
LEAVE = """
local me = ARGV[1]
redis.call('DEL', 'chatd:alive:' .. me, 'chatd:users:' .. me)
redis.call('HDEL', 'chatd:nodes', me)
redis.call('PUBLISH', ARGV[2], 'reap ' .. me .. ' - {}')
return 1
"""

SCRIPTS = {
    "claim": CLAIM,
    "update": UPDATE,
    "say": SAY,
    "heartbeat": HEARTBEAT,
    "sync": SYNC,
    "leave": LEAVE,
}


def sha(script: str) -> str:
    """The SHA1 Redis knows a loaded script by (EVALSHA)."""
    return hashlib.sha1(script.encode()).hexdigest()


def mid_of(stream_id: bytes | str) -> int:
    """``MS-SEQ`` -> MS * 1024 + SEQ: increasing with the stream's order, below 2**53
    until the year 2248 (so JSON clients read it exactly); SAY keeps SEQ < 1024."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms) * SEQ_LIMIT + int(seq)


def stream_id(mid: int) -> str:
    """The inverse of :func:`mid_of`."""
    return f"{mid // SEQ_LIMIT}-{mid % SEQ_LIMIT}"
