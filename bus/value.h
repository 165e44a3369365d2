/*
 * value.h - a dynamic value: what one msgpack object can hold.
 *
 * Envelope bodies are maps of these. A value owns everything below it:
 * value_destroy() frees the whole tree. Getters return borrowed pointers that
 * live as long as the value they came from. Map keys are always strings
 * (STYLE.md: bodies are maps with string keys).
 */
#ifndef SAMOTOP_VALUE_H
#define SAMOTOP_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum value_kind {
    VAL_NIL,
    VAL_BOOL,
    VAL_INT,
    VAL_FLOAT,
    VAL_STR,
    VAL_BIN,
    VAL_ARRAY,
    VAL_MAP
} value_kind_t;

typedef struct value value_t;

/* Constructors: the caller owns the result. Strings and bytes are copied. */
value_t *value_new_nil(void);
value_t *value_new_bool(bool b);
value_t *value_new_int(int64_t i);
value_t *value_new_float(double d);
value_t *value_new_str(const char *s);
value_t *value_new_strn(const char *s, size_t n);
value_t *value_new_bin(const void *p, size_t n);
/* Takes ownership of buf (malloc'd, n bytes) without copying. */
value_t *value_new_bin_take(void **buf_p, size_t n);
value_t *value_new_array(void);
value_t *value_new_map(void);

/* A deep copy; caller owns it. */
value_t *value_dup(const value_t *v);
void value_destroy(value_t **v_p);

value_kind_t value_kind(const value_t *v);
/* The kind's name: "nil", "bool", "int", "float", "str", "bin", "array",
 * "map". */
const char *value_kind_name(value_kind_t k);

bool value_bool(const value_t *v);
int64_t value_int(const value_t *v);
double value_float(const value_t *v);
/* String or bin bytes; *len (when not NULL) gets the length. Strings are
 * also NUL-terminated. Borrowed. */
const char *value_str(const value_t *v, size_t *len);

/* Arrays. value_push_take() takes *item and nulls it. */
size_t value_count(const value_t *v);
const value_t *value_at(const value_t *v, size_t i);
void value_push_take(value_t *arr, value_t **item_p);

/* Maps. value_set_take() replaces an existing key; it takes *item. */
void value_set_take(value_t *map, const char *key, value_t **item_p);
const value_t *value_get(const value_t *map, const char *key);
/* The i-th key of a map, for iteration in insertion order. */
const char *value_key_at(const value_t *map, size_t i);
/* Appends key to map without looking for an existing one: for decoders,
 * which have already bounded the input. Takes *item. */
void value_map_append_take(value_t *map, const char *key, size_t keylen,
                           value_t **item_p);
/* Removes key from map; returns true if it was there. */
bool value_del(value_t *map, const char *key);

/* Shorthands for map fields. The getters return fallback (or NULL) when the
 * key is missing or holds another kind. */
void value_set_str(value_t *map, const char *key, const char *s);
void value_set_int(value_t *map, const char *key, int64_t i);
void value_set_bool(value_t *map, const char *key, bool b);
const char *value_get_str(const value_t *map, const char *key);
int64_t value_get_int(const value_t *map, const char *key, int64_t fallback);
bool value_get_bool(const value_t *map, const char *key, bool fallback);

/* Arenas, for decoders: a whole tree carved out of one block that the
 * caller sized with the value_arena_size_*() of every piece and owns (it
 * frees the block; value_destroy() on an arena value only nulls the
 * pointer). Arena values are read-only: the mutators leave them as they
 * are (and destroy the item they were handed); value_dup() makes a heap
 * copy that may be changed. The carving functions return NULL (append:
 * false) when the block has no room for the piece, or the container none
 * for the item: a miscount. */
struct value_arena {
    char *p, *end;
};

size_t value_arena_size_scalar(void); /* nil, bool, int, float */
size_t value_arena_size_bytes(size_t n); /* a str or bin of n bytes */
size_t value_arena_size_container(value_kind_t kind, size_t n); /* n items */
size_t value_arena_size_key(size_t keylen); /* each map key */

value_t *value_arena_scalar(struct value_arena *a, value_kind_t kind);
value_t *value_arena_bool(struct value_arena *a, bool b);
value_t *value_arena_int(struct value_arena *a, int64_t i);
value_t *value_arena_float(struct value_arena *a, double d);
value_t *value_arena_bytes(struct value_arena *a, value_kind_t kind,
                           const void *s, size_t n);
/* An array or map with room for n items. */
value_t *value_arena_container(struct value_arena *a, value_kind_t kind,
                               size_t n);
/* Appends item (an arena value), under key (copied) for a map. */
bool value_arena_append(struct value_arena *a, value_t *c, const char *key,
                        size_t keylen, value_t *item);
bool value_in_arena(const value_t *v);

/* Structural equality (floats compared bit for bit). */
bool value_equal(const value_t *a, const value_t *b);

#endif
