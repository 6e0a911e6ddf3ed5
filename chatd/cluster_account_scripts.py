"""The Lua scripts of accounts, the nick hold and away in a cluster (docs/cluster.md).

Same rules as :mod:`chatd.cluster_scripts`: each change is one atomic script that writes
the shared state and publishes the event on the one channel. Keys (``P`` = ``chatd:``):

- ``P acct``          hash folded name -> JSON {n: name, s: hash record, c: created};
- ``P acctsk``        hash nick skeleton -> folded name (no look-alike accounts);
- ``P hold:FOLD``     JSON {node, cid, t: sha256 of the resume token, a: folded account}
  while the node that holds a dropped user's session keeps it (PX: the hold's length).
"""

from __future__ import annotations

__all__ = ["ACCOUNT_SCRIPTS", "ACCOUNTS", "SKELETONS", "HOLD"]

ACCOUNTS = "chatd:acct"
SKELETONS = "chatd:acctsk"
HOLD = "chatd:hold:"

# Register: exactly one of two nodes registering one name (or look-alikes) at once wins.
# ARGV: folded name, skeleton, record, most accounts, channel, event. 1 / 0 taken / -1 full.
ACCT_ADD = """
if redis.call('HEXISTS', 'chatd:acct', ARGV[1]) == 1 or
   redis.call('HEXISTS', 'chatd:acctsk', ARGV[2]) == 1 then return 0 end
if redis.call('HLEN', 'chatd:acct') >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', 'chatd:acct', ARGV[1], ARGV[3])
redis.call('HSET', 'chatd:acctsk', ARGV[2], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""

# A new password (ARGV[3] the new record), or the account dropped (ARGV[3] empty).
ACCT_SET = """
if redis.call('HEXISTS', 'chatd:acct', ARGV[1]) == 0 then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', 'chatd:acct', ARGV[1])
  if redis.call('HGET', 'chatd:acctsk', ARGV[2]) == ARGV[1] then
    redis.call('HDEL', 'chatd:acctsk', ARGV[2])
  end
else
  redis.call('HSET', 'chatd:acct', ARGV[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# A local user dropped: its session is held here; anyone may resume it through any node.
# KEYS: hold, users:ME. ARGV: record, PX, cid, user JSON, channel, event.
HOLD_SET = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""

# The hold ran out: forget it unless it was resumed meanwhile (another record, or none).
HOLD_END = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# Resume a held session here (this node ME, its new client CID): the resume token's hash
# or the logged-in account must match, the holding node must live and still hold it.
# KEYS: hold, nick:f, nick:s, users:ME, the rooms' streams. ARGV: me, cid, token hash,
# folded account, user JSON, channel, replay count. 0: not so; else JSON {node, ocid, msgs}.
RESUME = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local h = cjson.decode(raw)
local ok = (ARGV[3] ~= '' and h.t == ARGV[3]) or (ARGV[4] ~= '' and h.a == ARGV[4])
if not ok or redis.call('EXISTS', 'chatd:alive:' .. h.node) == 0 then return 0 end
if redis.call('HEXISTS', 'chatd:users:' .. h.node, h.cid) == 0 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', 'chatd:users:' .. h.node, h.cid)
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
local event = cjson.encode({node = h.node, ocid = h.cid, cid = ARGV[2]})
redis.call('PUBLISH', ARGV[6], 'resume ' .. ARGV[1] .. ' - ' .. event)
local msgs = {}
for i = 5, #KEYS do
  msgs[#msgs + 1] = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', ARGV[7])
end
return cjson.encode({node = h.node, ocid = h.cid, msgs = msgs})
"""

ACCOUNT_SCRIPTS = {
    "acct_add": ACCT_ADD,
    "acct_set": ACCT_SET,
    "hold_set": HOLD_SET,
    "hold_end": HOLD_END,
    "resume": RESUME,
}
