package redisstorage

import "github.com/redis/go-redis/v9"

// scripts holds the Lua scripts. Redis runs a script atomically, which
// is how values and the directory index are kept consistent and how
// lock ownership is checked and acted on without a race. They live in
// the Storage rather than in package variables because redis.Script
// carries internal mutable state.
type scripts struct {
	store, delete, list *redis.Script
	acquire             *redis.Script
	unlock, extend      *redis.Script
	markDir, storeFile  *redis.Script // Cluster layout, see cluster.go
}

func newScripts() scripts {
	return scripts{
		store:   redis.NewScript(storeLua),
		delete:  redis.NewScript(deleteLua),
		list:    redis.NewScript(listLua),
		acquire: redis.NewScript(acquireLua),
		unlock:  redis.NewScript(unlockLua),
		extend:  redis.NewScript(extendLua),

		markDir:   redis.NewScript(markDirLua),
		storeFile: redis.NewScript(storeFileLua),
	}
}

// luaHelpers is prepended to the scripts that work on the tree.
const luaHelpers = `
local function join(a, b)
  if a == '' then return b end
  return a .. '/' .. b
end
`

// storeLua writes a value and links it into every ancestor directory.
//
// ARGV[1] prefix, ARGV[2] normalized non-empty key, ARGV[3] value,
// ARGV[4] modification time in unix microseconds.
//
// All checks run before the first write: Redis does not roll back a
// script that fails halfway.
const storeLua = luaHelpers + `
local p, key, value, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', p .. ':d:' .. key) == 1 then
  return redis.error_reply('ERR cannot store a value at a directory')
end
local parts = {}
for part in string.gmatch(key, '[^/]+') do parts[#parts + 1] = part end
local dir = ''
for i = 1, #parts - 1 do
  dir = join(dir, parts[i])
  if redis.call('EXISTS', p .. ':v:' .. dir) == 1 then
    return redis.error_reply('ERR cannot store below a file: ' .. dir)
  end
end
-- A directory's entry in its parent carries the newest time in its
-- subtree; GT keeps a clock that steps backwards from hiding a newer
-- write. The file's own entry is its modification time.
dir = ''
for i = 1, #parts - 1 do
  redis.call('ZADD', p .. ':d:' .. dir, 'GT', ts, parts[i])
  dir = join(dir, parts[i])
end
redis.call('ZADD', p .. ':d:' .. dir, ts, parts[#parts])
redis.call('HSET', p .. ':v:' .. key, 'value', value, 'modified', ts)
return 1
`

// deleteLua removes a key, its whole subtree if it is a directory, and
// then unlinks it from its parent, removing ancestors left empty.
//
// ARGV[1] prefix, ARGV[2] normalized key (” is the root).
// Returns the number of files and directories removed.
const deleteLua = luaHelpers + `
local p, key = ARGV[1], ARGV[2]
local removed = 0
if key ~= '' then
  removed = redis.call('DEL', p .. ':v:' .. key)
end
local stack = {}
if redis.call('EXISTS', p .. ':d:' .. key) == 1 then stack[1] = key end
while #stack > 0 do
  local dir = table.remove(stack)
  local dk = p .. ':d:' .. dir
  for _, name in ipairs(redis.call('ZRANGE', dk, 0, -1)) do
    local child = join(dir, name)
    removed = removed + redis.call('DEL', p .. ':v:' .. child)
    if redis.call('EXISTS', p .. ':d:' .. child) == 1 then
      stack[#stack + 1] = child
    end
  end
  redis.call('DEL', dk)
  removed = removed + 1
end
if removed > 0 and key ~= '' then
  local child = key
  while true do
    local parent, name = string.match(child, '^(.*)/([^/]*)$')
    if parent == nil then parent, name = '', child end
    local pk = p .. ':d:' .. parent
    redis.call('ZREM', pk, name)
    -- An empty ZSET ceases to exist; keep going up only in that case.
    if parent == '' or redis.call('EXISTS', pk) == 1 then break end
    child = parent
  end
end
return removed
`

// listLua lists a directory from the index alone.
//
// ARGV[1] prefix, ARGV[2] normalized directory (” is the root),
// ARGV[3] '1' to descend into subdirectories.
// Returns {'none'} if nothing exists there, {'file'} if it is a file,
// otherwise {'dir', relative paths...}.
const listLua = luaHelpers + `
local p, base, recursive = ARGV[1], ARGV[2], ARGV[3] == '1'
if redis.call('EXISTS', p .. ':d:' .. base) == 0 then
  if base ~= '' and redis.call('EXISTS', p .. ':v:' .. base) == 1 then
    return {'file'}
  end
  return {'none'}
end
local out = {'dir'}
local stack = {''}
while #stack > 0 do
  local rel = table.remove(stack)
  local abs = base
  if rel ~= '' then abs = join(base, rel) end
  for _, name in ipairs(redis.call('ZRANGE', p .. ':d:' .. abs, 0, -1)) do
    local crel = join(rel, name)
    out[#out + 1] = crel
    if recursive and redis.call('EXISTS', p .. ':d:' .. join(abs, name)) == 1 then
      stack[#stack + 1] = crel
    end
  end
end
return out
`

// acquireLua takes a lock if it is free. It also succeeds when the lock
// already carries our token: go-redis resends a command whose reply was
// lost (a connection cut, a Sentinel failover), and a plain SET NX would
// then find our own lock, report it taken, and leave it to block everyone
// for a whole TTL.
//
// KEYS[1] lock key, ARGV[1] token, ARGV[2] TTL in milliseconds. Returns 1
// if the lock is ours, 0 if someone else holds it.
const acquireLua = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
`

// unlockLua deletes a lock only if it still carries our token, so that
// a holder whose lock expired cannot release somebody else's lock.
//
// KEYS[1] lock key, ARGV[1] token. Returns 1 if released, 0 if the lock
// was not ours (any more).
const unlockLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`

// extendLua makes a lock we still own live for at least ARGV[2]
// milliseconds from now. It never shortens the expiry, so the periodic
// refresh does not undo a longer lease granted by RenewLockLease.
//
// KEYS[1] lock key, ARGV[1] token, ARGV[2] milliseconds. Returns 1 if
// the lock is ours, 0 if it is not (it expired or was taken over).
const extendLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local want = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1
`
