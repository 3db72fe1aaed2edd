package redisbus

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each runs atomically in Redis. Times come from the server's TIME, so every
// kernel replica compares due times and retention against the same clock. string.format('%d')
// keeps large numbers out of Lua's %.14g float formatting.

// publishScript is the dedup half of a publish transaction (see Bus.store): MULTI, one XADD per
// message of the batch, then this script, EXEC. EXEC runs them as one unit, so no client sees
// the stream between the XADDs and the script, and a crash keeps all of it or none (Redis logs
// and replicates a transaction as one unit). The script finds the batch's messages as the
// stream's last entries, removes (XDEL) those whose dedup keys were seen within the dedup window
// and remembers the others' keys: the dedup check stays atomic with the append, and the payloads
// never pass through Lua (a 1 KB argument costs a script about 2 µs to receive, as much again to
// hand to XADD: more than the XADD itself).
//
//	KEYS[1] stream
//	ARGV[1] prefix of the dedup buckets' keys, ARGV[2] bucket width ms (the dedup window),
//	ARGV[3] retention ms, ARGV[4] max length, ARGV[5] the message id of the batch's last XADD,
//	then the dedup keys of the batch's XADDs, in their order
//
// It returns, per XADD, 1 when its entry stays and 0 when it was a duplicate.
//
// Before anything else it checks that the stream's last entry holds the message id of the last
// XADD: an XADD with the id '*' fails for the whole stream (the key holds another type, the ids
// are exhausted), never for one message in the middle, and Redis refuses a whole EXEC when it is
// out of memory; if the last one did not store, the script marks nothing and fails, and a retry
// stores the messages again. A set command that fails (a bucket key of another type) deletes the
// batch's entries again before failing: nothing is stored without its dedup key.
//
// Dedup keys live in sets, one per bucket of server time as wide as the dedup window: a key is
// added to the bucket of now and is seen while it is in the bucket of now or the one before,
// i.e. for at least the window and less than twice it. Two SMISMEMBER and one SADD per call
// replace a marker key per message (SET NX PX): each command a script makes costs about as much
// again as the command itself. The bucket no longer read (now−2) is deleted with UNLINK, which
// frees a large set on a background thread; each bucket also expires one width after that, in
// case no publish comes to unlink it. Bucket keys are built here from the server's clock, so
// every kernel replica uses the same buckets whatever its own clock; they share the stream key's
// hash tag, so a cluster finds them on the stream's slot.
//
// An entry removed again leaves no trace for the consumer groups: XSETID sets the stream's count
// of entries ever added and its greatest deleted id back to what they were (Redis ≥ 7 keeps
// them; a group's lag is that count minus the entries it read, and a deleted entry it never read
// would count as lag for ever), so no group ever saw the entry, nor does its lag. XSETID cannot
// set the greatest deleted id back to none (0-0); 0-1, before any entry '*' makes, means the
// same to Redis's lag accounting.
//
// Duplicates are rare (a publisher retrying after a failure), so the common path is two
// SMISMEMBER and one SADD of every key: when neither bucket holds any of them and SADD adds as
// many as there are, no entry goes. Otherwise the duplicates (keys in a bucket, and keys repeated
// within the batch after their first occurrence) are found and their entries, read back with one
// XREVRANGE, deleted. Both trims run once per call rather than in every XADD: the entries of a
// transaction share a millisecond or a few, so trimming after the last XADD removes what
// per-XADD trimming would have.
var publishScript = redis.NewScript(`
local stream = KEYS[1]
local prefix, width = ARGV[1], tonumber(ARGV[2])
local first = 6
local n = #ARGV - first + 1
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local tail = '\n' .. ARGV[5]
local ok = false
if last[1] then
  local f = last[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'meta' then ok = string.sub(f[i + 1], -#tail) == tail end
  end
end
if not ok then return redis.error_reply('ERR publish: the stream does not end with the batch just added') end
local function entries(k)
  local ids = {}
  for i, e in ipairs(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', k)) do ids[k - i + 1] = e[1] end
  return ids
end
local function drop(ids)
  local info = redis.call('XINFO', 'STREAM', stream)
  local f = {}
  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
  redis.call('XDEL', stream, unpack(ids))
  if f['entries-added'] then
    local md = f['max-deleted-entry-id']
    if md == '0-0' then md = '0-1' end
    redis.call('XSETID', stream, f['last-generated-id'], 'ENTRIESADDED', f['entries-added'] - #ids, 'MAXDELETEDID', md)
  end
end
local function fail(r)
  drop(entries(n))
  return redis.error_reply(r.err)
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minid = ms - tonumber(ARGV[3])
if minid < 0 then minid = 0 end
local bucket = math.floor(ms / width)
local cur = prefix .. string.format('%d', bucket)
local s0 = redis.pcall('SMISMEMBER', cur, unpack(ARGV, first))
if s0.err then return fail(s0) end
local s1 = redis.pcall('SMISMEMBER', prefix .. string.format('%d', bucket - 1), unpack(ARGV, first))
if s1.err then return fail(s1) end
local hit = false
for i = 1, n do
  if s0[i] == 1 or s1[i] == 1 then hit = true break end
end
local out = {}
local added = -1
if not hit then
  local r = redis.pcall('SADD', cur, unpack(ARGV, first))
  if type(r) == 'table' and r.err then return fail(r) end
  added = r
end
if added == n then
  for i = 1, n do out[i] = 1 end
else
  local new, gone, seen = {}, {}, {}
  for i = 1, n do
    local k = ARGV[first + i - 1]
    if s0[i] == 1 or s1[i] == 1 or seen[k] then
      out[i] = 0
      gone[#gone + 1] = i
    else
      seen[k] = true
      new[#new + 1] = k
      out[i] = 1
    end
  end
  if added < 0 and #new > 0 then
    local r = redis.pcall('SADD', cur, unpack(new))
    if type(r) == 'table' and r.err then return fail(r) end
  end
  local ids = entries(n - gone[1] + 1)
  local del = {}
  for j, i in ipairs(gone) do del[j] = ids[i - gone[1] + 1] end
  drop(del)
end
redis.call('PEXPIREAT', cur, string.format('%d', (bucket + 3) * width))
redis.call('UNLINK', prefix .. string.format('%d', bucket - 2))
redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', minid))
redis.call('XTRIM', stream, 'MAXLEN', '~', ARGV[4])
return out
`)

// publishBatch is the most messages one publish transaction stores: bounded so that one EXEC
// keeps Redis busy for about a millisecond (some 4 µs of Redis CPU per 1 KB message).
const publishBatch = 256

// nakScript schedules a pending delivery for a retry. Its due time rounds the server's time up
// to the millisecond (the claims round theirs down), so a retry never comes before its delay.
//
//	KEYS[1] delay set; ARGV[1] delay ms, ARGV[2] member ("<kind>/<entry id>")
var nakScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[1])), ARGV[2])
return 1
`)

// claimDueScript hands the deliveries whose retry is due to one consumer: each is removed from
// the delay set and claimed with XCLAIM, which increments its delivery counter. A member whose
// entry is gone (trimmed) or no longer pending (settled meanwhile) is dropped.
//
//	KEYS[1] delay set, KEYS[2] event stream, KEYS[3] retry stream
//	ARGV[1] group, ARGV[2] consumer, ARGV[3] max deliveries to return
//
// It returns {{{member, {field, value, ...}, delivery count}, ...}, ms until the next due
// retry or -1}.
var claimDueScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now), 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local kind, id = string.match(m, '^(%a+)/(.+)$')
  local key = nil
  if kind == 'events' then key = KEYS[2] elseif kind == 'retry' then key = KEYS[3] end
  if key then
    local e = redis.call('XCLAIM', key, ARGV[1], ARGV[2], 0, id)
    if e[1] then
      local p = redis.call('XPENDING', key, ARGV[1], id, id, 1)
      local n = 1
      if p[1] then n = p[1][4] end
      out[#out + 1] = {m, e[1][2], n}
    else
      redis.call('XACK', key, ARGV[1], id)
    end
  end
end
local wait = -1
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then
  wait = tonumber(nxt[2]) - now
  if wait < 0 then wait = 0 end
end
return {out, wait}
`)

// autoClaimScript takes over deliveries left unsettled for longer than min-idle (their consumer
// crashed or hung). XAUTOCLAIM JUSTID takes them without counting a delivery; the ones waiting
// for a retry (in the delay set) are left at that, the others are claimed again with XCLAIM,
// which counts the delivery and returns the entry.
//
//	KEYS[1] stream, KEYS[2] delay set
//	ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms, ARGV[4] start cursor, ARGV[5] count,
//	ARGV[6] stream kind
//
// It returns {next cursor, {{member, {field, value, ...}, delivery count}, ...}}.
var autoClaimScript = redis.NewScript(`
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5], 'JUSTID')
local out = {}
for _, id in ipairs(r[2]) do
  local m = ARGV[6] .. '/' .. id
  if not redis.call('ZSCORE', KEYS[2], m) then
    local e = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    if e[1] then
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
      local n = 1
      if p[1] then n = p[1][4] end
      out[#out + 1] = {m, e[1][2], n}
    else
      redis.call('XACK', KEYS[1], ARGV[1], id)
    end
  end
end
return {r[1], out}
`)

// delConsumerScript deletes a consumer of a group if nothing is pending for it (deleting a
// consumer drops its pending entries, which must be claimed by others instead).
//
//	KEYS[1] stream; ARGV[1] group, ARGV[2] consumer
var delConsumerScript = redis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
`)

// dlqAddScript stores a dead letter unless its dedup marker exists.
//
//	KEYS[1] dedup marker, KEYS[2] tenant's DLQ stream, KEYS[3] set of DLQ tenants
//	ARGV[1] dedup window ms, ARGV[2] tenant, ARGV[3...] field, value, ...
var dlqAddScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local args = {'XADD', KEYS[2], '*'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
redis.call(unpack(args))
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
`)

// dlqRemoveScript deletes dead letters of one tenant, and the tenant's stream and set member
// once it is empty (atomically, so a concurrent AddDeadLetter is never orphaned).
//
//	KEYS[1] tenant's DLQ stream, KEYS[2] set of DLQ tenants; ARGV[1] tenant, ARGV[2...] entry ids
var dlqRemoveScript = redis.NewScript(`
local n = 0
for i = 2, #ARGV do n = n + redis.call('XDEL', KEYS[1], ARGV[i]) end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
end
return n
`)

// lagScript counts, among up to ARGV[2] entries after ARGV[1], those a consumer's filter
// matches: the lag of a filtered consumer (a consumer group's lag counts every entry) or of any
// consumer when the server does not report lag (Redis < 7, or deletions inside the stream).
// Callers scan a long backlog in several calls, so Redis is never blocked for long. Tenant and
// type are the meta field's second and third lines (publishScript), or, in entries written
// before that field existed, fields of their own.
//
//	KEYS[1] stream; ARGV[1] id to start after, ARGV[2] max entries to scan,
//	ARGV[3] tenants ("," separated, "" any), ARGV[4] types (same)
//
// It returns {entries scanned, entries matched, last id scanned}.
var lagScript = redis.NewScript(`
local function set(csv)
  if csv == '' then return nil end
  local s = {}
  for v in string.gmatch(csv, '[^,]+') do s[v] = true end
  return s
end
local tenants, types = set(ARGV[3]), set(ARGV[4])
local r = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local matched = 0
for _, e in ipairs(r) do
  local f, tenant, typ = e[2], nil, nil
  for i = 1, #f, 2 do
    if f[i] == 'meta' then
      tenant, typ = string.match(f[i + 1], '^[^\n]*\n([^\n]*)\n([^\n]*)\n')
    elseif f[i] == 'tenant' then tenant = f[i + 1] elseif f[i] == 'type' then typ = f[i + 1] end
  end
  if (tenants == nil or tenants[tenant]) and (types == nil or types[typ]) then matched = matched + 1 end
end
local last = ARGV[1]
if #r > 0 then last = r[#r][1] end
return {#r, matched, last}
`)

var allScripts = []*redis.Script{
	publishScript, nakScript, claimDueScript, autoClaimScript, delConsumerScript,
	dlqAddScript, dlqRemoveScript, lagScript,
}
