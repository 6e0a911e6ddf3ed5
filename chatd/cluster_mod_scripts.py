"""The Lua scripts of shared moderation (:mod:`chatd.cluster_moderation`), and its keys
(``P`` = ``chatd:``; the rest of the layout is in :mod:`chatd.cluster_scripts`):

- ``P mod:seq``    the number of the last moderation command (INCR);
- ``P mod:rooms``  hash folded room -> JSON snapshot of a registered room's rules and
  member statuses, with the ``seq`` of the command it follows;
- ``P mod:live``   the same for unregistered rooms (dropped when such a room is created
  anew: its rules ended with its last member, as on one node);
- ``P mod:sbans``  JSON {seq, bans}: the server's bans;
- ``P mod:log``    list of JSON moderation-log entries, newest first (capped).

A moderation command is published as ``mod NODE SEQ JSON`` on the one channel.
"""

from __future__ import annotations

from chatd.cluster_scripts import PREFIX, sha

__all__ = ["MOD_SCRIPTS", "MOD_SHA", "SEQ", "ROOMS", "LIVE", "SBANS", "LOG", "LOG_KEEP"]

SEQ = PREFIX + "mod:seq"
ROOMS = PREFIX + "mod:rooms"
LIVE = PREFIX + "mod:live"
SBANS = PREFIX + "mod:sbans"
LOG = PREFIX + "mod:log"
LOG_KEEP = 10_000  # moderation-log entries kept in Redis (each node serves the newest)

# A moderation command: numbered and published; every node (this one at the reply)
# feeds it into its hub at this point of the channel's order. KEYS: seq.
# ARGV: channel, node, JSON {cid, w, c}.
MOD = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], 'mod ' .. ARGV[2] .. ' ' .. seq .. ' ' .. ARGV[3])
return seq
"""

# What a command left behind (written by the node it came from): a snapshot replaces
# the stored one unless that one follows a later command. KEYS: hash or string key.
# ARGV: field ('' for a string key), seq, JSON with a "seq" member.
SAVE = """
local cur
if ARGV[1] == '' then cur = redis.call('GET', KEYS[1])
else cur = redis.call('HGET', KEYS[1], ARGV[1]) end
if cur and tonumber(cjson.decode(cur).seq) > tonumber(ARGV[2]) then return 0 end
if ARGV[1] == '' then redis.call('SET', KEYS[1], ARGV[3])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""

# A node (re)synchronising: every stored snapshot, the server's bans, the newest log.
# KEYS: rooms, live, sbans, log. ARGV: how many log entries.
LOAD = """
return cjson.encode({rooms = redis.call('HGETALL', KEYS[1]),
                     live = redis.call('HGETALL', KEYS[2]),
                     sbans = redis.call('GET', KEYS[3]) or '',
                     log = redis.call('LRANGE', KEYS[4], 0, tonumber(ARGV[1]) - 1)})
"""

MOD_SCRIPTS = {"mod": MOD, "modsave": SAVE, "modload": LOAD}
MOD_SHA = {name: sha(text) for name, text in MOD_SCRIPTS.items()}
