#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "value.h"

/* Strings and bytes made here are stored right after their value_t, in
 * the same allocation (one malloc per string instead of two); those given
 * by value_new_bin_take() live apart. A map's keys live in the same block
 * as its items, keys right after the cap item slots. Values carved out of
 * an arena (value_arena_*) own nothing: the arena's owner frees it all. */
struct value {
    value_kind_t kind;
    bool in_arena;
    union {
        bool b;
        int64_t i;
        double d;
        struct {
            char *p;
            size_t len;
        } s; /* VAL_STR (NUL-terminated) and VAL_BIN */
        struct {
            value_t **items;
            char **keys; /* VAL_MAP only */
            size_t n, cap;
        } c;
    } u;
};

static value_t *
value_alloc(value_kind_t kind)
{
    value_t *v = xcalloc(1, sizeof(*v));

    v->kind = kind;
    return v;
}

value_t *
value_new_nil(void)
{
    return value_alloc(VAL_NIL);
}

value_t *
value_new_bool(bool b)
{
    value_t *v = value_alloc(VAL_BOOL);

    v->u.b = b;
    return v;
}

value_t *
value_new_int(int64_t i)
{
    value_t *v = value_alloc(VAL_INT);

    v->u.i = i;
    return v;
}

value_t *
value_new_float(double d)
{
    value_t *v = value_alloc(VAL_FLOAT);

    v->u.d = d;
    return v;
}

/* A value of kind with n bytes of s (and a NUL) stored inline. */
static value_t *
value_alloc_bytes(value_kind_t kind, const void *s, size_t n)
{
    value_t *v = xmalloc(sizeof(*v) + n + 1);

    memset(v, 0, sizeof(*v));
    v->kind = kind;
    v->u.s.p = (char *)(v + 1);
    if (n)
        memcpy(v->u.s.p, s, n);
    v->u.s.p[n] = '\0';
    v->u.s.len = n;
    return v;
}

static bool
bytes_inline(const value_t *v)
{
    return v->u.s.p == (const char *)(v + 1);
}

value_t *
value_new_strn(const char *s, size_t n)
{
    return value_alloc_bytes(VAL_STR, s, n);
}

value_t *
value_new_str(const char *s)
{
    return value_new_strn(s, strlen(s));
}

value_t *
value_new_bin(const void *p, size_t n)
{
    return value_alloc_bytes(VAL_BIN, p, n);
}

value_t *
value_new_bin_take(void **buf_p, size_t n)
{
    value_t *v = value_alloc(VAL_BIN);

    v->u.s.p = *buf_p;
    v->u.s.len = n;
    *buf_p = NULL;
    return v;
}

value_t *
value_new_array(void)
{
    return value_alloc(VAL_ARRAY);
}

value_t *
value_new_map(void)
{
    return value_alloc(VAL_MAP);
}

void
value_destroy(value_t **v_p)
{
    value_t *v = *v_p;

    if (v == NULL)
        return;
    if (v->in_arena) { /* the arena's owner frees it */
        *v_p = NULL;
        return;
    }
    switch (v->kind) {
    case VAL_STR:
    case VAL_BIN:
        if (!bytes_inline(v))
            free(v->u.s.p);
        break;
    case VAL_ARRAY:
    case VAL_MAP:
        for (size_t i = 0; i < v->u.c.n; i++) {
            value_destroy(&v->u.c.items[i]);
            if (v->u.c.keys)
                free(v->u.c.keys[i]);
        }
        free(v->u.c.items); /* the keys too: same block */
        break;
    default:
        break;
    }
    free(v);
    *v_p = NULL;
}

value_t *
value_dup(const value_t *v)
{
    value_t *d;

    switch (v->kind) {
    case VAL_STR:
        return value_new_strn(v->u.s.p, v->u.s.len);
    case VAL_BIN:
        return value_new_bin(v->u.s.p, v->u.s.len);
    case VAL_ARRAY:
    case VAL_MAP:
        d = value_alloc(v->kind);
        for (size_t i = 0; i < v->u.c.n; i++) {
            value_t *item = value_dup(v->u.c.items[i]);

            /* Appended, not set: a decoded map may hold a key twice, and
             * the copy must be the same map (and not cost a lookup per
             * key). */
            if (v->kind == VAL_MAP)
                value_map_append_take(d, v->u.c.keys[i],
                                      strlen(v->u.c.keys[i]), &item);
            else
                value_push_take(d, &item);
        }
        return d;
    default:
        d = value_alloc(v->kind);
        d->u = v->u; /* a scalar: nothing shared */
        return d;
    }
}

/* Arenas. Every piece is rounded up to 8 bytes, in the count and in the
 * carving alike, so that value_t and pointer arrays stay aligned. */

#define ARENA_ROUND(n) (((n) + 7) & ~(size_t)7)

size_t
value_arena_size_scalar(void)
{
    return ARENA_ROUND(sizeof(value_t));
}

size_t
value_arena_size_bytes(size_t n)
{
    return ARENA_ROUND(sizeof(value_t)) + ARENA_ROUND(n + 1);
}

size_t
value_arena_size_container(value_kind_t kind, size_t n)
{
    return ARENA_ROUND(sizeof(value_t)) +
           ARENA_ROUND(sizeof(void *) * n * (kind == VAL_MAP ? 2 : 1));
}

size_t
value_arena_size_key(size_t keylen)
{
    return ARENA_ROUND(keylen + 1);
}

/* n bytes of a, or NULL when a has no room left. */
static void *
arena_take(struct value_arena *a, size_t n)
{
    char *p = a->p;

    n = ARENA_ROUND(n);
    if (n > (size_t)(a->end - a->p))
        return NULL;
    a->p += n;
    return p;
}

value_t *
value_arena_scalar(struct value_arena *a, value_kind_t kind)
{
    value_t *v = arena_take(a, sizeof(*v));

    if (v == NULL)
        return NULL;
    memset(v, 0, sizeof(*v));
    v->kind = kind;
    v->in_arena = true;
    return v;
}

value_t *
value_arena_bool(struct value_arena *a, bool b)
{
    value_t *v = value_arena_scalar(a, VAL_BOOL);

    if (v)
        v->u.b = b;
    return v;
}

value_t *
value_arena_int(struct value_arena *a, int64_t i)
{
    value_t *v = value_arena_scalar(a, VAL_INT);

    if (v)
        v->u.i = i;
    return v;
}

value_t *
value_arena_float(struct value_arena *a, double d)
{
    value_t *v = value_arena_scalar(a, VAL_FLOAT);

    if (v)
        v->u.d = d;
    return v;
}

value_t *
value_arena_bytes(struct value_arena *a, value_kind_t kind, const void *s,
                  size_t n)
{
    value_t *v = value_arena_scalar(a, kind);

    if (v == NULL || (v->u.s.p = arena_take(a, n + 1)) == NULL)
        return NULL;
    if (n)
        memcpy(v->u.s.p, s, n);
    v->u.s.p[n] = '\0';
    v->u.s.len = n;
    return v;
}

value_t *
value_arena_container(struct value_arena *a, value_kind_t kind, size_t n)
{
    value_t *v = value_arena_scalar(a, kind);

    if (v == NULL)
        return NULL;
    v->u.c.cap = n;
    if (n) {
        v->u.c.items =
            arena_take(a, sizeof(void *) * n * (kind == VAL_MAP ? 2 : 1));
        if (v->u.c.items == NULL)
            return NULL;
        if (kind == VAL_MAP)
            v->u.c.keys = (char **)(v->u.c.items + n);
    }
    return v;
}

bool
value_arena_append(struct value_arena *a, value_t *c, const char *key,
                   size_t keylen, value_t *item)
{
    if (c->u.c.n >= c->u.c.cap)
        return false;
    if (c->kind == VAL_MAP) {
        char *k = arena_take(a, keylen + 1);

        if (k == NULL)
            return false;
        memcpy(k, key, keylen);
        k[keylen] = '\0';
        c->u.c.keys[c->u.c.n] = k;
    }
    c->u.c.items[c->u.c.n++] = item;
    return true;
}

bool
value_in_arena(const value_t *v)
{
    return v->in_arena;
}

value_kind_t
value_kind(const value_t *v)
{
    return v->kind;
}

const char *
value_kind_name(value_kind_t k)
{
    static const char *const names[] = {"nil", "bool", "int", "float",
                                        "str", "bin",  "array", "map"};

    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

bool
value_bool(const value_t *v)
{
    return v->kind == VAL_BOOL && v->u.b;
}

int64_t
value_int(const value_t *v)
{
    return v->kind == VAL_INT ? v->u.i : 0;
}

double
value_float(const value_t *v)
{
    return v->kind == VAL_FLOAT ? v->u.d : 0.0;
}

const char *
value_str(const value_t *v, size_t *len)
{
    if (v->kind != VAL_STR && v->kind != VAL_BIN)
        return NULL;
    if (len)
        *len = v->u.s.len;
    return v->u.s.p;
}

size_t
value_count(const value_t *v)
{
    return v->kind == VAL_ARRAY || v->kind == VAL_MAP ? v->u.c.n : 0;
}

const value_t *
value_at(const value_t *v, size_t i)
{
    if ((v->kind != VAL_ARRAY && v->kind != VAL_MAP) || i >= v->u.c.n)
        return NULL;
    return v->u.c.items[i];
}

/* Room for one more item. A map's block holds cap item pointers, then cap
 * key pointers. */
static void
grow(value_t *c)
{
    size_t old = c->u.c.cap, cap;

    if (c->u.c.n < old)
        return;
    cap = old ? old * 2 : 4;
    if (c->kind == VAL_MAP) {
        c->u.c.items = xrealloc(c->u.c.items, 2 * sizeof(void *) * cap);
        c->u.c.keys = (char **)(c->u.c.items + cap);
        memmove(c->u.c.keys, c->u.c.items + old, sizeof(char *) * c->u.c.n);
    } else {
        c->u.c.items = xrealloc(c->u.c.items, sizeof(value_t *) * cap);
    }
    c->u.c.cap = cap;
}

void
value_push_take(value_t *arr, value_t **item_p)
{
    if (arr->in_arena) { /* read-only (value.h) */
        value_destroy(item_p);
        return;
    }
    grow(arr);
    arr->u.c.items[arr->u.c.n++] = *item_p;
    *item_p = NULL;
}

static long
map_find(const value_t *map, const char *key)
{
    if (map == NULL || map->kind != VAL_MAP)
        return -1;
    for (size_t i = 0; i < map->u.c.n; i++)
        if (strcmp(map->u.c.keys[i], key) == 0)
            return (long)i;
    return -1;
}

void
value_set_take(value_t *map, const char *key, value_t **item_p)
{
    long i;

    if (map->in_arena) { /* read-only (value.h) */
        value_destroy(item_p);
        return;
    }
    i = map_find(map, key);
    if (i >= 0) {
        value_destroy(&map->u.c.items[i]);
        map->u.c.items[i] = *item_p;
    } else {
        grow(map);
        map->u.c.keys[map->u.c.n] = xstrdup(key);
        map->u.c.items[map->u.c.n++] = *item_p;
    }
    *item_p = NULL;
}

void
value_map_append_take(value_t *map, const char *key, size_t keylen,
                      value_t **item_p)
{
    if (map->in_arena) { /* read-only (value.h) */
        value_destroy(item_p);
        return;
    }
    grow(map);
    map->u.c.keys[map->u.c.n] = xstrndup(key, keylen);
    map->u.c.items[map->u.c.n++] = *item_p;
    *item_p = NULL;
}

const value_t *
value_get(const value_t *map, const char *key)
{
    long i = map_find(map, key);

    return i < 0 ? NULL : map->u.c.items[i];
}

const char *
value_key_at(const value_t *map, size_t i)
{
    if (map->kind != VAL_MAP || i >= map->u.c.n)
        return NULL;
    return map->u.c.keys[i];
}

bool
value_del(value_t *map, const char *key)
{
    long i = map_find(map, key);

    if (i < 0 || map->in_arena)
        return false;
    value_destroy(&map->u.c.items[i]);
    free(map->u.c.keys[i]);
    memmove(&map->u.c.items[i], &map->u.c.items[i + 1],
            sizeof(value_t *) * (map->u.c.n - (size_t)i - 1));
    memmove(&map->u.c.keys[i], &map->u.c.keys[i + 1],
            sizeof(char *) * (map->u.c.n - (size_t)i - 1));
    map->u.c.n--;
    return true;
}

void
value_set_str(value_t *map, const char *key, const char *s)
{
    value_t *v = value_new_str(s);

    value_set_take(map, key, &v);
}

void
value_set_int(value_t *map, const char *key, int64_t i)
{
    value_t *v = value_new_int(i);

    value_set_take(map, key, &v);
}

void
value_set_bool(value_t *map, const char *key, bool b)
{
    value_t *v = value_new_bool(b);

    value_set_take(map, key, &v);
}

const char *
value_get_str(const value_t *map, const char *key)
{
    const value_t *v = value_get(map, key);

    return v && v->kind == VAL_STR ? v->u.s.p : NULL;
}

int64_t
value_get_int(const value_t *map, const char *key, int64_t fallback)
{
    const value_t *v = value_get(map, key);

    return v && v->kind == VAL_INT ? v->u.i : fallback;
}

bool
value_get_bool(const value_t *map, const char *key, bool fallback)
{
    const value_t *v = value_get(map, key);

    return v && v->kind == VAL_BOOL ? v->u.b : fallback;
}

bool
value_equal(const value_t *a, const value_t *b)
{
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case VAL_NIL:
        return true;
    case VAL_BOOL:
        return a->u.b == b->u.b;
    case VAL_INT:
        return a->u.i == b->u.i;
    case VAL_FLOAT:
        return memcmp(&a->u.d, &b->u.d, sizeof(double)) == 0;
    case VAL_STR:
    case VAL_BIN:
        return a->u.s.len == b->u.s.len &&
               memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0;
    case VAL_ARRAY:
    case VAL_MAP:
        if (a->u.c.n != b->u.c.n)
            return false;
        for (size_t i = 0; i < a->u.c.n; i++) {
            if (a->kind == VAL_MAP &&
                strcmp(a->u.c.keys[i], b->u.c.keys[i]) != 0)
                return false;
            if (!value_equal(a->u.c.items[i], b->u.c.items[i]))
                return false;
        }
        return true;
    }
    return false;
}
