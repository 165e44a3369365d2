#include <fnmatch.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <msgpack.h>

#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "envelope.h"

/* An envelope is one allocation with its header strings right after the
 * struct (blk..blk_end); a decoded one also holds its body there, as a
 * value arena (value.h). A string set later (envelope_set_id()) lives
 * apart, and so does a body once envelope_body() has made it mutable. */
struct envelope {
    int v;
    char *id, *re, *trace, *type, *from;
    int64_t ts, deadline;
    enum env_type type_id;
    value_t *body;
    char *blk, *blk_end;
};

/* Whether p is the envelope's to free (not in its block). */
static bool
env_owns(const envelope_t *env, const char *p)
{
    return p && (p < env->blk || p >= env->blk_end);
}

static char *
blk_put(char **at, const char *s, size_t n)
{
    char *p = *at;

    memcpy(p, s, n);
    p[n] = '\0';
    *at += n + 1;
    return p;
}

/* A zeroed envelope with the header strings (re may be NULL) copied into
 * its block, and extra more bytes there, 8-aligned, for an arena. */
static envelope_t *
env_alloc(const char *id, size_t idl, const char *re, size_t rel,
          const char *trace, size_t trl, const char *type, size_t tyl,
          const char *from, size_t frl, size_t extra, char **extra_out)
{
    size_t strs = idl + trl + tyl + frl + 4 + (re ? rel + 1 : 0);
    size_t head = (sizeof(envelope_t) + strs + 7) & ~(size_t)7;
    envelope_t *env = xmalloc(head + extra);
    char *at = (char *)(env + 1);

    memset(env, 0, sizeof(*env));
    env->blk = at;
    env->blk_end = (char *)env + head + extra;
    env->id = blk_put(&at, id, idl);
    env->re = re ? blk_put(&at, re, rel) : NULL;
    env->trace = blk_put(&at, trace, trl);
    env->type = blk_put(&at, type, tyl);
    env->from = blk_put(&at, from, frl);
    if (extra_out)
        *extra_out = (char *)env + head;
    return env;
}

static void set_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_why(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || whylen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* Ids: a random 64-bit prefix drawn once per process, then a counter. The
 * prefix is drawn again after fork() so that children never repeat their
 * parent's ids. */
static char id_prefix[17];
static uint64_t id_counter;
static int id_ready;

/* After fork() the child must not repeat its parent's ids. */
static void
id_after_fork(void)
{
    id_ready = 0;
}

static void
random_hex(char *out, size_t nbytes)
{
    unsigned char r[32];
    size_t got = 0;

    while (got < nbytes) {
        ssize_t n = getrandom(r + got, nbytes - got, 0);

        if (n > 0)
            got += (size_t)n;
    }
    for (size_t i = 0; i < nbytes; i++)
        sprintf(out + 2 * i, "%02x", r[i]);
}

/* "<prefix>-<counter in hex>", written by hand: this runs for every
 * envelope, and snprintf() showed in the bus benchmark's profile. */
static void
next_id(char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    static int registered;
    char digits[17];
    int n = 0;
    uint64_t v;

    if (!id_ready) {
        if (!registered) {
            pthread_atfork(NULL, NULL, id_after_fork);
            registered = 1;
        }
        random_hex(id_prefix, 8);
        id_counter = 0;
        id_ready = 1;
    }
    v = ++id_counter;
    do {
        digits[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    if (outlen < 16 + 1 + (size_t)n + 1) {
        out[0] = '\0';
        return;
    }
    memcpy(out, id_prefix, 16);
    out[16] = '-';
    for (int i = 0; i < n; i++)
        out[17 + i] = digits[n - 1 - i];
    out[17 + n] = '\0';
}

void
envelope_new_trace(char out[ENVELOPE_TRACE_LEN])
{
    random_hex(out, 8);
}

/* Whether type matches pat: an exact name, "*<suffix>" (the only glob the
 * schemas use today, matched without fnmatch() since this runs for every
 * envelope), or any other glob. */
static bool
type_matches(const char *pat, const char *type, size_t tlen)
{
    if (pat[0] != '*')
        return strcmp(pat, type) == 0;
    if (strpbrk(pat + 1, "*?[") == NULL) {
        size_t sl = strlen(pat + 1);

        return tlen >= sl && strcmp(type + tlen - sl, pat + 1) == 0;
    }
    return fnmatch(pat, type, 0) == 0;
}

/* The types seen last in this thread and their schemas: a process sends
 * and receives few types, and matching one against every schema's pattern
 * showed in the bus benchmark's profile. */
#define TYPE_CACHE 4

struct type_cache_entry {
    char type[ENVELOPE_MAX_NAME + 1];
    enum env_type id;
};

static __thread struct type_cache_entry type_cache[TYPE_CACHE];
static __thread unsigned type_cache_next;

static enum env_type
lookup_type(const char *type)
{
    size_t tlen = strlen(type);
    enum env_type id = ENV_NONE;
    struct type_cache_entry *e;

    for (int i = 0; i < TYPE_CACHE; i++)
        if (type_cache[i].type[0] == type[0] &&
            strcmp(type_cache[i].type, type) == 0)
            return type_cache[i].id;
    for (int i = 1; i < ENV__COUNT; i++)
        if (type_matches(env_type_descs[i].pattern, type, tlen)) {
            id = (enum env_type)i;
            break;
        }
    if (tlen > 0 && tlen <= ENVELOPE_MAX_NAME) {
        e = &type_cache[type_cache_next++ % TYPE_CACHE];
        memcpy(e->type, type, tlen + 1);
        e->id = id;
    }
    return id;
}

/* envelope_new() with re set (NULL for a request). */
static envelope_t *
env_new(const char *type, size_t tyl, const char *trace, const char *re,
        int64_t timeout_ms)
{
    envelope_t *env;
    char id[64], tr[ENVELOPE_TRACE_LEN];
    const char *from = log_actor();

    next_id(id, sizeof(id));
    if (trace == NULL) {
        envelope_new_trace(tr);
        trace = tr;
    }
    env = env_alloc(id, strlen(id), re, re ? strlen(re) : 0, trace,
                    strlen(trace), type, tyl, from, strlen(from), 0, NULL);
    env->v = ENVELOPE_VERSION;
    env->type_id = lookup_type(env->type);
    env->ts = clock_wall_us();
    env->deadline = env->ts + timeout_ms * 1000;
    env->body = value_new_map();
    return env;
}

envelope_t *
envelope_new(const char *type, const char *trace, int64_t timeout_ms)
{
    return env_new(type, strlen(type), trace, NULL, timeout_ms);
}

envelope_t *
envelope_new_reply(const envelope_t *req, int code, const char *ecode,
                   const char *text)
{
    size_t tl = strlen(req->type);
    char small[ENVELOPE_MAX_NAME + sizeof(".reply")];
    char *type = tl < ENVELOPE_MAX_NAME ? small : xmalloc(tl + sizeof(".reply"));
    envelope_t *env;

    memcpy(type, req->type, tl);
    memcpy(type + tl, ".reply", sizeof(".reply"));
    env = env_new(type, tl + sizeof(".reply") - 1, req->trace, req->id, 0);
    if (type != small)
        free(type);
    env->deadline = req->deadline;
    value_set_int(env->body, ENV_KEY_CODE, code);
    value_set_str(env->body, ENV_KEY_ECODE, ecode);
    value_set_str(env->body, ENV_KEY_TEXT, text);
    return env;
}

envelope_t *
envelope_dup(const envelope_t *env)
{
    envelope_t *d = env_alloc(
        env->id, strlen(env->id), env->re, env->re ? strlen(env->re) : 0,
        env->trace, strlen(env->trace), env->type, strlen(env->type),
        env->from, strlen(env->from), 0, NULL);

    d->v = env->v;
    d->ts = env->ts;
    d->deadline = env->deadline;
    d->type_id = env->type_id;
    d->body = value_dup(env->body);
    return d;
}

void
envelope_destroy(envelope_t **env_p)
{
    envelope_t *env = *env_p;

    if (env == NULL)
        return;
    if (env_owns(env, env->id))
        free(env->id);
    if (env_owns(env, env->re))
        free(env->re);
    if (env_owns(env, env->trace))
        free(env->trace);
    if (env_owns(env, env->type))
        free(env->type);
    if (env_owns(env, env->from))
        free(env->from);
    value_destroy(&env->body); /* a no-op for an arena body */
    free(env);
    *env_p = NULL;
}

int
envelope_version(const envelope_t *env)
{
    return env->v;
}

const char *
envelope_id(const envelope_t *env)
{
    return env->id;
}

const char *
envelope_re(const envelope_t *env)
{
    return env->re;
}

const char *
envelope_trace(const envelope_t *env)
{
    return env->trace;
}

const char *
envelope_type(const envelope_t *env)
{
    return env->type;
}

const char *
envelope_from(const envelope_t *env)
{
    return env->from;
}

int64_t
envelope_ts(const envelope_t *env)
{
    return env->ts;
}

int64_t
envelope_deadline(const envelope_t *env)
{
    return env->deadline;
}

enum env_type
envelope_type_id(const envelope_t *env)
{
    return env->type_id;
}

void
envelope_set_id(envelope_t *env, const char *id)
{
    if (env_owns(env, env->id))
        free(env->id);
    env->id = xstrdup(id);
}

void
envelope_set_from(envelope_t *env, const char *from)
{
    if (env_owns(env, env->from))
        free(env->from);
    env->from = xstrdup(from);
}

void
envelope_set_deadline(envelope_t *env, int64_t deadline_us)
{
    env->deadline = deadline_us;
}

void
envelope_set_ts(envelope_t *env, int64_t ts_us)
{
    env->ts = ts_us;
}

value_t *
envelope_body(envelope_t *env)
{
    /* A decoded body is read-only: the first call for a mutable one
     * copies it out of the arena, which stays until the envelope goes
     * (pointers peeked into it stay valid). */
    if (env->body && value_in_arena(env->body))
        env->body = value_dup(env->body);
    return env->body;
}

const value_t *
envelope_body_peek(const envelope_t *env)
{
    return env->body;
}

const char *
envelope_get_str(const envelope_t *env, const char *key)
{
    return value_get_str(env->body, key);
}

int64_t
envelope_get_int(const envelope_t *env, const char *key, int64_t fallback)
{
    return value_get_int(env->body, key, fallback);
}

int
envelope_code(const envelope_t *env)
{
    return (int)value_get_int(env->body, ENV_KEY_CODE, 0);
}

/* Encoding. */

static void
pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void
pack_cstr(msgpack_packer *pk, const char *s)
{
    pack_str(pk, s, strlen(s));
}

static void
pack_value(msgpack_packer *pk, const value_t *v)
{
    const char *s;
    size_t n;

    switch (value_kind(v)) {
    case VAL_NIL:
        msgpack_pack_nil(pk);
        break;
    case VAL_BOOL:
        if (value_bool(v))
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case VAL_INT:
        msgpack_pack_int64(pk, value_int(v));
        break;
    case VAL_FLOAT:
        msgpack_pack_double(pk, value_float(v));
        break;
    case VAL_STR:
        s = value_str(v, &n);
        pack_str(pk, s, n);
        break;
    case VAL_BIN:
        s = value_str(v, &n);
        msgpack_pack_bin(pk, n);
        msgpack_pack_bin_body(pk, s, n);
        break;
    case VAL_ARRAY:
        msgpack_pack_array(pk, value_count(v));
        for (size_t i = 0; i < value_count(v); i++)
            pack_value(pk, value_at(v, i));
        break;
    case VAL_MAP:
        msgpack_pack_map(pk, value_count(v));
        for (size_t i = 0; i < value_count(v); i++) {
            pack_cstr(pk, value_key_at(v, i));
            pack_value(pk, value_at(v, i));
        }
        break;
    }
}

/* The per-thread buffer envelope_encode_scratch() writes into: kept from
 * one envelope to the next, so that encoding allocates nothing once warm
 * (msgpack's sbuffer mallocs 8 KiB per envelope, and glibc consolidates
 * its fast bins for each such request). Shrunk after an envelope over
 * SCRATCH_KEEP, so that one big message does not pin its size. */
#define SCRATCH_KEEP (256u << 10)

struct scratch {
    char *data;
    size_t size, cap;
};

static __thread struct scratch enc_scratch;

static int
scratch_write(void *data, const char *buf, size_t len)
{
    struct scratch *sc = data;

    if (sc->cap - sc->size < len) {
        size_t cap = sc->cap ? sc->cap : 1024;

        while (cap - sc->size < len)
            cap *= 2;
        sc->data = xrealloc(sc->data, cap);
        sc->cap = cap;
    }
    memcpy(sc->data + sc->size, buf, len);
    sc->size += len;
    return 0;
}

int
envelope_encode_scratch(const envelope_t *env, const char **buf_out,
                        size_t *len_out)
{
    struct scratch *sc = &enc_scratch;
    msgpack_packer pk;

    if (sc->cap > SCRATCH_KEEP) {
        free(sc->data);
        *sc = (struct scratch){0};
    }
    sc->size = 0;
    msgpack_packer_init(&pk, sc, scratch_write);
    msgpack_pack_map(&pk, env->re ? 9 : 8);
    pack_cstr(&pk, ENV_KEY_V);
    msgpack_pack_int(&pk, env->v);
    pack_cstr(&pk, ENV_KEY_ID);
    pack_cstr(&pk, env->id);
    if (env->re) {
        pack_cstr(&pk, ENV_KEY_RE);
        pack_cstr(&pk, env->re);
    }
    pack_cstr(&pk, ENV_KEY_TRACE);
    pack_cstr(&pk, env->trace);
    pack_cstr(&pk, ENV_KEY_TYPE);
    pack_cstr(&pk, env->type);
    pack_cstr(&pk, ENV_KEY_FROM);
    pack_cstr(&pk, env->from);
    pack_cstr(&pk, ENV_KEY_TS);
    msgpack_pack_int64(&pk, env->ts);
    pack_cstr(&pk, ENV_KEY_DEADLINE);
    msgpack_pack_int64(&pk, env->deadline);
    pack_cstr(&pk, ENV_KEY_BODY);
    pack_value(&pk, env->body);
    *buf_out = sc->data;
    *len_out = sc->size;
    return 0;
}

int
envelope_encode(const envelope_t *env, char **buf_out, size_t *len_out)
{
    const char *p;
    size_t n;
    int rc = envelope_encode_scratch(env, &p, &n);

    if (rc != 0)
        return rc;
    *buf_out = xmemdup(p, n);
    *len_out = n;
    return 0;
}

/* Decoding, step 1: a walk over the raw bytes that allocates nothing. It
 * proves the input is one complete msgpack object no deeper than allowed,
 * with string keys in every map and no container declaring more items than
 * bytes remain, before msgpack-c (which allocates a container's slots from
 * its declared count) ever sees it. */

static uint64_t
be(const unsigned char *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int
prescan(const unsigned char *p, size_t len, char *why, size_t whylen)
{
    struct {
        uint64_t left; /* items still to read in this container */
        int is_map;
    } st[ENVELOPE_MAX_DEPTH + 2];
    int depth = 0;
    size_t off = 0;

    st[0].left = 1; /* the top-level object */
    st[0].is_map = 0;
    for (;;) {
        unsigned char b;
        uint64_t n = 0, payload = 0;
        int container = 0, is_map = 0, is_str = 0;

        while (depth >= 0 && st[depth].left == 0)
            depth--;
        if (depth < 0)
            break;
        if (off >= len) {
            set_why(why, whylen, "input ends inside the envelope");
            return ERR_TRUNCATED;
        }
        /* In a map, items alternate key, value starting with a key; with
         * 2n items declared, a key comes when the count left is even. */
        int want_key = st[depth].is_map && st[depth].left % 2 == 0;

        b = p[off++];
        st[depth].left--;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            payload = 0;
        } else if (b >= 0x80 && b <= 0x8f) {
            container = 1, is_map = 1, n = b & 0x0f;
        } else if (b >= 0x90 && b <= 0x9f) {
            container = 1, n = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            is_str = 1, payload = b & 0x1f;
        } else {
            static const int lenbytes[] = {
                [0xc4 - 0xc4] = 1, [0xc5 - 0xc4] = 2, [0xc6 - 0xc4] = 4,
                [0xd9 - 0xc4] = 1, [0xda - 0xc4] = 2, [0xdb - 0xc4] = 4,
                [0xdc - 0xc4] = 2, [0xdd - 0xc4] = 4, [0xde - 0xc4] = 2,
                [0xdf - 0xc4] = 4};
            int lb;

            switch (b) {
            case 0xc1:
                set_why(why, whylen, "byte 0xc1 at offset %zu is never "
                        "used in msgpack", off - 1);
                return ERR_MALFORMED;
            case 0xc7: case 0xc8: case 0xc9:
            case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
                set_why(why, whylen, "msgpack ext type at offset %zu",
                        off - 1);
                return ERR_UNSUPPORTED;
            case 0xca: payload = 4; break;
            case 0xcb: payload = 8; break;
            case 0xcc: case 0xd0: payload = 1; break;
            case 0xcd: case 0xd1: payload = 2; break;
            case 0xce: case 0xd2: payload = 4; break;
            case 0xcf: case 0xd3: payload = 8; break;
            default:
                lb = lenbytes[b - 0xc4];
                if (len - off < (size_t)lb) {
                    set_why(why, whylen, "input ends inside a length");
                    return ERR_TRUNCATED;
                }
                n = be(p + off, lb);
                off += (size_t)lb;
                if (b >= 0xdc) {
                    container = 1;
                    is_map = b >= 0xde;
                } else {
                    is_str = b >= 0xd9;
                    payload = n;
                }
            }
        }
        if (want_key && !is_str) {
            set_why(why, whylen, "map key at offset %zu is not a string",
                    off - 1);
            return ERR_KEY;
        }
        if (container) {
            uint64_t items = is_map ? 2 * n : n;

            if (items > len - off) {
                set_why(why, whylen, "container at offset %zu declares "
                        "%llu items, more than the input holds", off - 1,
                        (unsigned long long)items);
                return ERR_TRUNCATED;
            }
            /* The envelope map is level 1 and the body level 2, so a body
             * ENVELOPE_MAX_DEPTH deep ends at level ENVELOPE_MAX_DEPTH + 1.
             * An empty container is a level too, or the limit would depend
             * on what the innermost one holds. */
            if (depth + 1 > ENVELOPE_MAX_DEPTH + 1) {
                set_why(why, whylen, "nesting deeper than %d",
                        ENVELOPE_MAX_DEPTH);
                return ERR_DEPTH;
            }
            if (items == 0)
                continue;
            depth++;
            st[depth].left = items;
            st[depth].is_map = is_map;
        } else {
            if (payload > len - off) {
                set_why(why, whylen, "input ends inside a value at offset "
                        "%zu", off - 1);
                return ERR_TRUNCATED;
            }
            off += (size_t)payload;
        }
    }
    if (off != len) {
        set_why(why, whylen, "%zu bytes after the envelope", len - off);
        return ERR_TRAILING;
    }
    return 0;
}

/* Step 2: msgpack-c's object tree into our values, in one arena. The
 * prescan bounded the depth, so recursion is safe. First the arena's
 * size: */
static size_t
arena_need(const msgpack_object *o)
{
    size_t n;

    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        return value_arena_size_bytes(o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return value_arena_size_bytes(o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY:
        n = value_arena_size_container(VAL_ARRAY, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            n += arena_need(&o->via.array.ptr[i]);
        return n;
    case MSGPACK_OBJECT_MAP:
        n = value_arena_size_container(VAL_MAP, o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];

            /* A key that is not a string is refused by to_value(). */
            if (kv->key.type == MSGPACK_OBJECT_STR)
                n += value_arena_size_key(kv->key.via.str.size);
            n += arena_need(&kv->val);
        }
        return n;
    default:
        return value_arena_size_scalar();
    }
}

/* Then the values: NULL from the arena means arena_need() miscounted. */
static int
to_value(struct value_arena *a, const msgpack_object *o, value_t **out,
         char *why, size_t whylen)
{
    value_t *v = NULL;
    int rc;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        v = value_arena_scalar(a, VAL_NIL);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        v = value_arena_bool(a, o->via.boolean);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX) {
            set_why(why, whylen, "integer %llu over 2^63-1",
                    (unsigned long long)o->via.u64);
            return ERR_UNSUPPORTED;
        }
        v = value_arena_int(a, (int64_t)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        v = value_arena_int(a, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        v = value_arena_float(a, o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        v = value_arena_bytes(a, VAL_STR, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        v = value_arena_bytes(a, VAL_BIN, o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        v = value_arena_container(a, VAL_ARRAY, o->via.array.size);
        for (uint32_t i = 0; v && i < o->via.array.size; i++) {
            value_t *item;

            if ((rc = to_value(a, &o->via.array.ptr[i], &item, why, whylen)))
                return rc;
            if (!value_arena_append(a, v, NULL, 0, item))
                v = NULL;
        }
        break;
    case MSGPACK_OBJECT_MAP:
        v = value_arena_container(a, VAL_MAP, o->via.map.size);
        for (uint32_t i = 0; v && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            const char *nul;
            value_t *item;

            if (kv->key.type != MSGPACK_OBJECT_STR) /* prescan's job */
                return ERR_KEY;
            /* Keys are C strings from here on: "echo\0x" would pass for
             * "echo" in every lookup, and be written back as "echo". */
            nul = memchr(kv->key.via.str.ptr, '\0', kv->key.via.str.size);
            if (nul != NULL) {
                set_why(why, whylen, "map key \"%.*s\" holds a NUL byte",
                        (int)(nul - kv->key.via.str.ptr),
                        kv->key.via.str.ptr);
                return ERR_KEY;
            }
            if ((rc = to_value(a, &kv->val, &item, why, whylen)))
                return rc;
            if (!value_arena_append(a, v, kv->key.via.str.ptr,
                                    kv->key.via.str.size, item))
                v = NULL;
        }
        break;
    default:
        set_why(why, whylen, "unsupported msgpack type %d", (int)o->type);
        return ERR_UNSUPPORTED;
    }
    if (v == NULL) {
        set_why(why, whylen, "decoder arena miscounted");
        return ERR_NOMEM;
    }
    *out = v;
    return 0;
}

static const msgpack_object *
map_lookup(const msgpack_object *map, const char *key)
{
    size_t kl = strlen(key);

    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;

        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            memcmp(k->via.str.ptr, key, kl) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* A header name: *out points into the input (or is NULL when absent and
 * not required). */
static int
get_name(const msgpack_object *map, const char *key, bool required,
         const msgpack_object **out, char *why, size_t whylen)
{
    const msgpack_object *o = map_lookup(map, key);

    *out = NULL;
    if (o == NULL) {
        if (!required)
            return 0;
        set_why(why, whylen, "%s: missing", key);
        return ERR_MISSING;
    }
    if (o->type != MSGPACK_OBJECT_STR) {
        set_why(why, whylen, "%s: not a string", key);
        return ERR_TYPE;
    }
    if (o->via.str.size == 0 || o->via.str.size > ENVELOPE_MAX_NAME ||
        memchr(o->via.str.ptr, '\0', o->via.str.size)) {
        set_why(why, whylen, "%s: empty, over %d bytes or holding NUL", key,
                ENVELOPE_MAX_NAME);
        return ERR_TYPE;
    }
    *out = o;
    return 0;
}

static int
get_time(const msgpack_object *map, const char *key, int64_t *out, char *why,
         size_t whylen)
{
    const msgpack_object *o = map_lookup(map, key);

    if (o == NULL) {
        set_why(why, whylen, "%s: missing", key);
        return ERR_MISSING;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        *out = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = o->via.i64;
    else {
        set_why(why, whylen, "%s: not an integer", key);
        return ERR_TYPE;
    }
    return 0;
}

static bool
type_name_ok(const char *t)
{
    int dots = 0;
    char prev = '.';

    for (const char *p = t; *p; prev = *p++) {
        if (*p == '.') {
            if (prev == '.')
                return false;
            dots++;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                     *p == '_' || *p == '-')) {
            return false;
        }
    }
    return dots > 0 && prev != '.';
}

static bool
kind_ok(enum env_kind want, value_kind_t got)
{
    switch (want) {
    case ENV_KIND_ANY: return true;
    case ENV_KIND_NIL: return got == VAL_NIL;
    case ENV_KIND_BOOL: return got == VAL_BOOL;
    case ENV_KIND_INT: return got == VAL_INT;
    case ENV_KIND_NUMBER: return got == VAL_INT || got == VAL_FLOAT;
    case ENV_KIND_STR: return got == VAL_STR;
    case ENV_KIND_BIN: return got == VAL_BIN;
    case ENV_KIND_ARRAY: return got == VAL_ARRAY;
    case ENV_KIND_MAP: return got == VAL_MAP;
    }
    return false;
}

int
envelope_check_body(const envelope_t *env, char *why, size_t whylen)
{
    const struct env_field *f;
    int64_t code = value_get_int(env->body, ENV_KEY_CODE, 0);

    if (env->type_id == ENV_NONE)
        return 0;
    for (f = env_type_descs[env->type_id].fields; f->key; f++) {
        const value_t *v = value_get(env->body, f->key);

        if (v == NULL) {
            if (f->required == ENV_REQ_ALWAYS ||
                (f->required == ENV_REQ_ON_SUCCESS && code < 400)) {
                set_why(why, whylen, "body.%s: missing (required by %s)",
                        f->key, env_type_descs[env->type_id].name);
                return ERR_MISSING;
            }
            continue;
        }
        if (!kind_ok(f->kind, value_kind(v))) {
            set_why(why, whylen, "body.%s: %s where %s wants another type",
                    f->key, value_kind_name(value_kind(v)),
                    env_type_descs[env->type_id].name);
            return ERR_TYPE;
        }
    }
    return 0;
}

int
envelope_decode(const void *buf, size_t len, size_t max,
                envelope_t **env_out, char *why, size_t whylen)
{
    /* One zone per thread, cleared after each decode: msgpack_unpacked
     * would allocate and free an 8 KiB zone for every envelope. */
    static __thread msgpack_zone *zone;
    msgpack_object result;
    const msgpack_object *top, *o, *id, *trace, *type, *from, *re;
    struct value_arena arena;
    char tbuf[ENVELOPE_MAX_NAME + 1];
    envelope_t *env = NULL;
    int64_t ts, deadline;
    size_t off = 0, tl;
    int rc;

    *env_out = NULL;
    if (why && whylen >= 3)
        memcpy(why, "ok", 3); /* not set_why(): no printf on success */
    if (len > max) {
        set_why(why, whylen, "%zu bytes over the limit of %zu", len, max);
        return ERR_TOO_BIG;
    }
    if (len == 0) {
        set_why(why, whylen, "empty input");
        return ERR_TRUNCATED;
    }
    if ((rc = prescan(buf, len, why, whylen)) != 0)
        return rc;
    if (zone == NULL && (zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE)) ==
                            NULL)
        return ERR_NOMEM;
    if (msgpack_unpack(buf, len, &off, zone, &result) !=
        MSGPACK_UNPACK_SUCCESS) {
        set_why(why, whylen, "msgpack-c refused the input");
        rc = ERR_MALFORMED;
        goto out;
    }
    top = &result;
    if (top->type != MSGPACK_OBJECT_MAP) {
        set_why(why, whylen, "top level is not a map");
        rc = ERR_NOT_MAP;
        goto out;
    }
    /* The version first: a newer envelope may differ in everything else. */
    o = map_lookup(top, ENV_KEY_V);
    if (o == NULL) {
        set_why(why, whylen, "v: missing");
        rc = ERR_MISSING;
        goto out;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        set_why(why, whylen, "v: not a positive integer");
        rc = ERR_TYPE;
        goto out;
    }
    if (o->via.u64 != ENVELOPE_VERSION) {
        set_why(why, whylen, "v: version %llu, this build speaks %d",
                (unsigned long long)o->via.u64, ENVELOPE_VERSION);
        rc = ERR_VERSION;
        goto out;
    }
    if ((rc = get_name(top, ENV_KEY_ID, true, &id, why, whylen)) ||
        (rc = get_name(top, ENV_KEY_TRACE, true, &trace, why, whylen)) ||
        (rc = get_name(top, ENV_KEY_TYPE, true, &type, why, whylen)) ||
        (rc = get_name(top, ENV_KEY_FROM, true, &from, why, whylen)) ||
        (rc = get_name(top, ENV_KEY_RE, false, &re, why, whylen)) ||
        (rc = get_time(top, ENV_KEY_TS, &ts, why, whylen)) ||
        (rc = get_time(top, ENV_KEY_DEADLINE, &deadline, why, whylen)))
        goto out;
    /* get_name() bounded it and refused NUL: a C string from here on. */
    tl = type->via.str.size;
    memcpy(tbuf, type->via.str.ptr, tl);
    tbuf[tl] = '\0';
    if (!type_name_ok(tbuf)) {
        set_why(why, whylen, "type: \"%s\" is not a dotted lower-case name",
                tbuf);
        rc = ERR_TYPE;
        goto out;
    }
    if (re == NULL && tl > 6 && strcmp(tbuf + tl - 6, ".reply") == 0) {
        set_why(why, whylen, "re: missing in a reply");
        rc = ERR_MISSING;
        goto out;
    }
    o = map_lookup(top, ENV_KEY_BODY);
    if (o == NULL) {
        set_why(why, whylen, "body: missing");
        rc = ERR_MISSING;
        goto out;
    }
    if (o->type != MSGPACK_OBJECT_MAP) {
        set_why(why, whylen, "body: not a map");
        rc = ERR_TYPE;
        goto out;
    }
    /* One allocation: the envelope, its header strings, its body. */
    env = env_alloc(id->via.str.ptr, id->via.str.size,
                    re ? re->via.str.ptr : NULL, re ? re->via.str.size : 0,
                    trace->via.str.ptr, trace->via.str.size, tbuf, tl,
                    from->via.str.ptr, from->via.str.size, arena_need(o),
                    &arena.p);
    arena.end = env->blk_end;
    env->v = ENVELOPE_VERSION;
    env->ts = ts;
    env->deadline = deadline;
    if ((rc = to_value(&arena, o, &env->body, why, whylen)) != 0)
        goto out;
    env->type_id = lookup_type(env->type);
    if ((rc = envelope_check_body(env, why, whylen)) != 0)
        goto out;
    *env_out = env;
    env = NULL;
out:
    envelope_destroy(&env);
    msgpack_zone_clear(zone);
    return rc;
}

static void
mask_value(value_t *v)
{
    if (value_kind(v) == VAL_ARRAY) {
        for (size_t i = 0; i < value_count(v); i++)
            mask_value((value_t *)value_at(v, i));
        return;
    }
    if (value_kind(v) != VAL_MAP)
        return;
    for (size_t i = 0; i < value_count(v); i++) {
        const char *k = value_key_at(v, i);

        if (envelope_key_is_secret(k))
            value_set_str(v, k, "***");
        else
            mask_value((value_t *)value_at(v, i));
    }
}

void
envelope_mask_secrets(envelope_t *env)
{
    mask_value(envelope_body(env));
}

bool
envelope_service_has_secrets(const char *service)
{
    /* A shard of a service ("mailbox.2", lib/shard.h) carries its types. */
    const char *dot = strchr(service, '.');
    size_t len = dot ? (size_t)(dot - service) : strlen(service);

    for (const char *const *s = env_secret_services; *s; s++)
        if ((strlen(*s) == len && strncmp(*s, service, len) == 0) ||
            strcmp(*s, "*") == 0)
            return true;
    return false;
}

bool
envelope_key_is_secret(const char *key)
{
    for (const char *const *k = env_secret_keys; *k; k++)
        if (strcmp(*k, key) == 0)
            return true;
    return false;
}

/* JSON output, for the tap. */

/* The length of the well-formed UTF-8 sequence at p, or 0 when there is
 * none. Well-formed is Unicode's table 3-7: no overlong forms, no UTF-16
 * surrogates, nothing past U+10FFFF; JSON readers refuse the rest. */
static size_t
utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0; /* overlong below U+0800 */
    else if (c == 0xed)
        hi = 0x9f; /* U+D800..U+DFFF */
    else if (c == 0xf0)
        lo = 0x90; /* overlong below U+10000 */
    else if (c == 0xf4)
        hi = 0x8f; /* past U+10FFFF */
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* Each byte that does not start a well-formed sequence becomes one
 * U+FFFD. */
static void
json_str(buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    buf_addc(b, '"');
    while (p < end) {
        unsigned char c = *p;
        size_t seq = utf8_len(p, end);

        if (seq == 0) {
            buf_adds(b, "\\ufffd");
            p++;
            continue;
        }
        if (seq > 1) {
            buf_add(b, p, seq);
            p += seq;
            continue;
        }
        if (c == '"' || c == '\\') {
            buf_addc(b, '\\');
            buf_addc(b, (char)c);
        } else if (c < 0x20 || c == 0x7f) {
            char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};

            buf_adds(b, esc);
        } else {
            buf_addc(b, (char)c);
        }
        p++;
    }
    buf_addc(b, '"');
}

static void
json_base64(buf_t *b, const unsigned char *p, size_t n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    buf_addc(b, '"');
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16 |
                     (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {tbl[w >> 18], tbl[(w >> 12) & 63],
                     i + 1 < n ? tbl[(w >> 6) & 63] : '=',
                     i + 2 < n ? tbl[w & 63] : '='};

        buf_add(b, q, 4);
    }
    buf_addc(b, '"');
}

#define JSON_ABBREV_AT 256

static void
json_value(buf_t *b, const value_t *v, int flags)
{
    const char *s;
    size_t n;

    switch (value_kind(v)) {
    case VAL_NIL:
        buf_adds(b, "null");
        break;
    case VAL_BOOL:
        buf_adds(b, value_bool(v) ? "true" : "false");
        break;
    case VAL_INT:
        buf_printf(b, "%lld", (long long)value_int(v));
        break;
    case VAL_FLOAT: {
        double d = value_float(v);

        if (d != d || d - d != 0) /* NaN and infinities: JSON has none */
            buf_adds(b, "null");
        else
            buf_printf(b, "%.17g", d);
        break;
    }
    case VAL_STR:
        s = value_str(v, &n);
        if ((flags & ENVELOPE_JSON_ABBREV) && n > JSON_ABBREV_AT) {
            buf_t t = BUF_INIT;

            buf_add(&t, s, JSON_ABBREV_AT);
            buf_printf(&t, "...(%zu bytes)", n);
            json_str(b, t.data, t.len);
            buf_free(&t);
        } else {
            json_str(b, s, n);
        }
        break;
    case VAL_BIN:
        s = value_str(v, &n);
        if ((flags & ENVELOPE_JSON_ABBREV) && n > JSON_ABBREV_AT)
            buf_printf(b, "\"(%zu bytes)\"", n);
        else
            json_base64(b, (const unsigned char *)s, n);
        break;
    case VAL_ARRAY:
        buf_addc(b, '[');
        for (size_t i = 0; i < value_count(v); i++) {
            if (i)
                buf_addc(b, ',');
            json_value(b, value_at(v, i), flags);
        }
        buf_addc(b, ']');
        break;
    case VAL_MAP:
        buf_addc(b, '{');
        for (size_t i = 0; i < value_count(v); i++) {
            const char *k = value_key_at(v, i);

            if (i)
                buf_addc(b, ',');
            json_str(b, k, strlen(k));
            buf_addc(b, ':');
            if ((flags & ENVELOPE_JSON_MASK) && envelope_key_is_secret(k))
                buf_adds(b, "\"***\"");
            else
                json_value(b, value_at(v, i), flags);
        }
        buf_addc(b, '}');
        break;
    }
}

char *
envelope_to_json(const envelope_t *env, int flags)
{
    buf_t b = BUF_INIT;

    buf_printf(&b, "{\"v\":%d,\"id\":", env->v);
    json_str(&b, env->id, strlen(env->id));
    if (env->re) {
        buf_adds(&b, ",\"re\":");
        json_str(&b, env->re, strlen(env->re));
    }
    buf_adds(&b, ",\"trace\":");
    json_str(&b, env->trace, strlen(env->trace));
    buf_adds(&b, ",\"type\":");
    json_str(&b, env->type, strlen(env->type));
    buf_adds(&b, ",\"from\":");
    json_str(&b, env->from, strlen(env->from));
    buf_printf(&b, ",\"ts\":%lld,\"deadline\":%lld,\"body\":",
               (long long)env->ts, (long long)env->deadline);
    json_value(&b, env->body, flags);
    buf_addc(&b, '}');
    return buf_take(&b);
}

char *
envelope_value_to_json(const value_t *v, int flags)
{
    buf_t b = BUF_INIT;

    json_value(&b, v, flags);
    return buf_take(&b);
}
