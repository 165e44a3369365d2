/*
 * envelope.h - the bus envelope and its msgpack codec (DESIGN.md, Envelopes).
 *
 * Every message on the bus is one msgpack map: v, id, re (replies only),
 * trace, type, from, ts, deadline and body. envelope_decode() checks all of
 * it before anything else sees it: the size limit, truncation, nesting
 * depth, the version, each header field's presence and type, and the body's
 * fields against the schema of its type (bus/env_types.h, generated from
 * schemas/). Each failure has its own ERR_* code and a reason naming the
 * field. Unknown keys are skipped, for forward compatibility.
 *
 * An envelope owns its strings and body. Getters return borrowed pointers
 * that live as long as the envelope. A decoded envelope's body is
 * read-only until envelope_body() is asked for it, which makes it a
 * mutable copy (decoding builds it in one block; see value.h, arenas).
 */
#ifndef SAMOTOP_ENVELOPE_H
#define SAMOTOP_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env_types.h"
#include "value.h"

#define ENVELOPE_VERSION 1
/* Longest id, re, trace, type or from accepted. */
#define ENVELOPE_MAX_NAME 128
/* Deepest nesting of maps and arrays accepted in a body. */
#define ENVELOPE_MAX_DEPTH 16
/* Room for a trace id from envelope_new_trace(), with its NUL. */
#define ENVELOPE_TRACE_LEN 17

typedef struct envelope envelope_t;

/* A new request of type with a fresh id, ts now, the given trace (a new
 * one when NULL), from set to this process (log_actor()), a deadline
 * timeout_ms from now and an empty body. Caller owns it. */
envelope_t *envelope_new(const char *type, const char *trace,
                         int64_t timeout_ms);

/* A reply to req: type "<req type>.reply", re = req's id, the same trace
 * and deadline, and a body holding code, ecode and text. Caller owns it. */
envelope_t *envelope_new_reply(const envelope_t *req, int code,
                               const char *ecode, const char *text);

envelope_t *envelope_dup(const envelope_t *env);
void envelope_destroy(envelope_t **env_p);

/* Writes a new random trace id (16 lowercase hex digits) into out. */
void envelope_new_trace(char out[ENVELOPE_TRACE_LEN]);

int envelope_version(const envelope_t *env);
const char *envelope_id(const envelope_t *env);
const char *envelope_re(const envelope_t *env); /* NULL for requests */
const char *envelope_trace(const envelope_t *env);
const char *envelope_type(const envelope_t *env);
const char *envelope_from(const envelope_t *env);
int64_t envelope_ts(const envelope_t *env);
int64_t envelope_deadline(const envelope_t *env);
/* The schema the type matched, or ENV_NONE for a type no schema names. */
enum env_type envelope_type_id(const envelope_t *env);

/* Header setters, for tests and tools that build unusual envelopes. */
void envelope_set_id(envelope_t *env, const char *id);
void envelope_set_from(envelope_t *env, const char *from);
void envelope_set_deadline(envelope_t *env, int64_t deadline_us);
void envelope_set_ts(envelope_t *env, int64_t ts_us);

/* The body map: mutable for the owner, borrowed. */
value_t *envelope_body(envelope_t *env);
const value_t *envelope_body_peek(const envelope_t *env);

/* Shorthands for body fields (see value_get_*). */
const char *envelope_get_str(const envelope_t *env, const char *key);
int64_t envelope_get_int(const envelope_t *env, const char *key,
                         int64_t fallback);
/* The reply code of a reply body, 0 when there is none. */
int envelope_code(const envelope_t *env);

/* Encodes env into a new buffer (*buf_out, caller frees). Returns 0. */
int envelope_encode(const envelope_t *env, char **buf_out, size_t *len_out);

/* Encodes env into a buffer of this thread's that stays valid until the
 * next encode in the same thread (borrowed: do not free it). Allocates
 * nothing once warm: for a message sent at once, which copies it anyway.
 * Returns 0. */
int envelope_encode_scratch(const envelope_t *env, const char **buf_out,
                            size_t *len_out);

/* Decodes len bytes. On success *env_out is a new envelope (caller owns)
 * and 0 is returned. Otherwise *env_out is NULL, the result is one of
 * ERR_TOO_BIG (len > max), ERR_TRUNCATED, ERR_MALFORMED, ERR_TRAILING,
 * ERR_UNSUPPORTED (msgpack ext), ERR_DEPTH, ERR_KEY, ERR_NOT_MAP,
 * ERR_VERSION, ERR_MISSING or ERR_TYPE, and why (when not NULL) names
 * the field and the reason. */
int envelope_decode(const void *buf, size_t len, size_t max,
                    envelope_t **env_out, char *why, size_t whylen);

/* Checks the body against the schema of the envelope's type; returns 0,
 * ERR_MISSING or ERR_TYPE (with the field in why). Done by
 * envelope_decode(); exposed for envelopes built in memory. */
int envelope_check_body(const envelope_t *env, char *why, size_t whylen);

/* Replaces the value of every secret key, at any depth of the body, with
 * "***" (for the broker's trace feed). */
void envelope_mask_secrets(envelope_t *env);

/* Whether envelopes of service may hold secrets (schemas' secret fields). */
bool envelope_service_has_secrets(const char *service);

/* Whether key names a secret (schemas' x-samotop-secret): such values never
 * reach a log or the trace feed. */
bool envelope_key_is_secret(const char *key);

enum {
    ENVELOPE_JSON_MASK = 1,   /* secrets become "***" (always for the tap) */
    ENVELOPE_JSON_ABBREV = 2, /* bins and strings over 256 bytes shortened */
};

/* The envelope as one line of JSON (no newline), in a new string the
 * caller frees. Bins become base64 strings. */
char *envelope_to_json(const envelope_t *env, int flags);

/* One value as JSON in a new string the caller frees (same flags). */
char *envelope_value_to_json(const value_t *v, int flags);

#endif
