"""The registry's Lua scripts: every change of the registry's shape runs as one of them.

Redis runs a script atomically, so a commit (version number, weights, metadata and an optional
promotion), an alias move (pointer, history entry and pub/sub hint), a rollback and a delete
are each seen whole or not at all. The scripts' ``KEYS`` and ``ARGV`` are listed above each;
:class:`~worker.registry.store.ModelRegistry` registers and calls them.
"""

from __future__ import annotations

LUA_PRELUDE = r"""
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function jint(v)
  if v == nil or v == false or v == cjson.null then return 'null' end
  local n = tonumber(v)
  if n == nil then return 'null' end
  return string.format('%d', n)
end
-- Point `alias` at `to` (nil removes it), append the history entry, publish the hint.
-- Returns the entry's JSON, or nil when the alias already had that value.
local function move(aliases, history, channel, alias, to, action, undoes)
  local cur = redis.call('HGET', aliases, alias)
  if cur and to and tonumber(cur) == to then return nil end
  if (not cur) and (not to) then return nil end
  if to then
    redis.call('HSET', aliases, alias, string.format('%d', to))
  else
    redis.call('HDEL', aliases, alias)
  end
  local seq = redis.call('LLEN', history) + 1
  local entry = '{"seq":' .. seq .. ',"alias":' .. cjson.encode(alias)
    .. ',"from":' .. jint(cur) .. ',"to":' .. jint(to) .. ',"time":' .. now()
    .. ',"action":' .. cjson.encode(action) .. ',"undoes":' .. jint(undoes) .. '}'
  redis.call('RPUSH', history, entry)
  redis.call('PUBLISH', channel, entry)
  return entry
end
"""

# KEYS: staging, seq, versions, models, aliases, history
# ARGV: model key base, name, size, record JSON, promote ('1' or ''), channel, alias
LUA_COMMIT = (
    LUA_PRELUDE
    + r"""
local size = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'error', 'staging_missing'} end
local have = redis.call('STRLEN', KEYS[1])
if have ~= size then return {'error', 'staging_size', tostring(have)} end
local v = redis.call('INCR', KEYS[2])
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0)
if #top > 0 and tonumber(top[1]) >= v then
  v = tonumber(top[1]) + 1
  redis.call('SET', KEYS[2], string.format('%d', v))
end
local vs = string.format('%d', v)
local meta = ARGV[1] .. ':v:' .. vs .. ':meta'
local weights = ARGV[1] .. ':v:' .. vs .. ':weights'
if redis.call('EXISTS', meta) == 1 or redis.call('EXISTS', weights) == 1 then
  return {'error', 'exists', vs}
end
redis.call('RENAME', KEYS[1], weights)
redis.call('PERSIST', weights)
redis.call('HSET', meta, 'record', ARGV[4], 'version', vs, 'created_at', now())
redis.call('ZADD', KEYS[3], v, vs)
redis.call('SADD', KEYS[4], ARGV[2])
local entry = ''
if ARGV[5] == '1' then
  entry = move(KEYS[5], KEYS[6], ARGV[6], ARGV[7], v, 'promote', nil) or ''
end
return {'ok', vs, entry}
"""
)

# KEYS: aliases, history, versions      ARGV: channel, alias, version, action[, expected]
# (expected: the version the alias must point at now, '' for none: else {'moved', current})
LUA_PROMOTE = (
    LUA_PRELUDE
    + r"""
local to = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[3], string.format('%d', to)) then
  return {'error', 'no_version'}
end
if ARGV[5] and ARGV[5] ~= '' then
  local cur = redis.call('HGET', KEYS[1], ARGV[2]) or ''
  if cur ~= ARGV[5] then return {'moved', cur} end
end
local entry = move(KEYS[1], KEYS[2], ARGV[1], ARGV[2], to, ARGV[4], nil)
if entry then return {'ok', entry} end
return {'noop', ''}
"""
)

# KEYS: aliases, history      ARGV: channel, alias
LUA_UNSET = (
    LUA_PRELUDE
    + r"""
local entry = move(KEYS[1], KEYS[2], ARGV[1], ARGV[2], nil, 'remove', nil)
if entry then return {'ok', entry} end
return {'noop', ''}
"""
)

# Roll `alias` back: walk the history from the end, skipping rollbacks and the entries they
# reverted; the first entry still in effect is undone (its `from` becomes current again).
# KEYS: aliases, history, versions      ARGV: channel, alias
LUA_ROLLBACK = (
    LUA_PRELUDE
    + r"""
local alias = ARGV[2]
local cur = redis.call('HGET', KEYS[1], alias)
if not cur then return {'error', 'no_alias'} end
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
local undone = {}
for i = #entries, 1, -1 do
  local e = cjson.decode(entries[i])
  if e['alias'] == alias then
    if e['action'] == 'rollback' then
      if e['undoes'] ~= cjson.null then undone[tonumber(e['undoes'])] = true end
    elseif not undone[tonumber(e['seq'])] then
      if e['to'] == cjson.null or tonumber(e['to']) ~= tonumber(cur) then
        return {'error', 'inconsistent', cur}
      end
      if e['from'] == cjson.null then return {'error', 'no_previous', cur} end
      local target = tonumber(e['from'])
      if not redis.call('ZSCORE', KEYS[3], string.format('%d', target)) then
        return {'error', 'target_deleted', string.format('%d', target)}
      end
      local entry = move(KEYS[1], KEYS[2], ARGV[1], alias, target, 'rollback', e['seq'])
      return {'ok', entry}
    end
  end
end
return {'error', 'no_previous', cur}
"""
)

# KEYS: aliases, versions, meta, weights, models      ARGV: version, name
LUA_DELETE = r"""
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {'error', 'no_version'} end
local holders = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if flat[i + 1] == ARGV[1] then table.insert(holders, flat[i]) end
end
if #holders > 0 then return {'error', 'aliased', table.concat(holders, ',')} end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[5], ARGV[2]) end
return {'ok'}
"""


__all__ = ["LUA_COMMIT", "LUA_DELETE", "LUA_PRELUDE", "LUA_PROMOTE", "LUA_ROLLBACK", "LUA_UNSET"]
