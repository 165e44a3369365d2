/*
 * admin.h - samotop-admin, the management command line.
 *
 * Each verb is a function in its own file (admin_<verb>.c) listed in the
 * verb table of admin_main.c. A verb returns the process exit status:
 * 0 done, 1 the thing asked for failed (printed on stderr), 2 bad usage.
 *
 * The account verbs (domain, user, alias) edit Redis directly, with the
 * keys of schemas/redis.md, each change in one MULTI/EXEC under WATCH so
 * that it is applied whole or not at all, even beside another admin.
 * They share admin_db.c (Redis), admin_addr.c (address syntax) and
 * admin_password.c (reading a new password).
 */
#ifndef SAMOTOP_ADMIN_H
#define SAMOTOP_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/store.h"
#include "lib/config.h"
#include "lib/smtp_addr.h"

struct admin_verb {
    const char *name;
    const char *usage;
    int (*run)(const config_t *cfg, int argc, char **argv);
    int subverbs; /* run() answers "VERB --help" */
};

/* ping [--count N] [--timeout MS] [SERVICE...]: asks each service's
 * workers who they are, over the bus. */
int admin_ping(const config_t *cfg, int argc, char **argv);

/* call [--timeout MS] [--trace ID] TYPE [KEY=VALUE]...: one request of
 * any type; prints the reply as JSON. */
int admin_call(const config_t *cfg, int argc, char **argv);

/* domain add|del|list|catchall: the domains we receive mail for. */
int admin_domain(const config_t *cfg, int argc, char **argv);

/* user add|passwd|del|list|show|disable|enable|quota: accounts. */
int admin_user(const config_t *cfg, int argc, char **argv);

/* alias add|del|list: addresses that forward to others. */
int admin_alias(const config_t *cfg, int argc, char **argv);

/* route add|del|list: static next hops for the relay (admin_route.c). */
int admin_route(const config_t *cfg, int argc, char **argv);

/* queue list|show|retry|delete: the outbound queue (admin_queue.c). */
int admin_queue(const config_t *cfg, int argc, char **argv);

/* Sub-verbs of the account verbs. */

enum {
    ADMIN_OPT_FORCE = 1 << 0, /* --force */
    ADMIN_OPT_NONE = 1 << 1,  /* --none */
};

/* One sub-verb as run: its name for messages ("user add"), the
 * configuration, the arguments left after the options, and the options
 * given. */
struct admin_cmd {
    char name[32];
    const config_t *cfg;
    int argc;
    char **argv;
    unsigned opts;
};

struct admin_sub {
    const char *name;
    const char *args; /* e.g. "DOMAIN [--force]" */
    int min, max;     /* argument count; max -1: no limit */
    unsigned opts;    /* ADMIN_OPT_* allowed */
    const char *help; /* a paragraph */
    int (*run)(struct admin_cmd *cmd);
};

/* Runs "VERB SUB [ARGS]" (argv[0] is VERB) from subs (ending with a NULL
 * name): prints help for "--help" and "help", checks the options and the
 * argument count (2 after a usage message), or returns what run does. */
int admin_sub_dispatch(const config_t *cfg, const char *verb, const char *about,
                       const struct admin_sub *subs, int argc, char **argv);

/* Prints "NAME: message" on stderr; returns 1, the refusal status. */
int admin_fail(const struct admin_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "NAME: warning: message" on stderr. */
void admin_warn(const struct admin_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Addresses (admin_addr.c). */

/* An address as the account verbs keep it: local part and domain in lower
 * case when it is (or is to be) ours, the normalised mailbox otherwise. */
struct admin_addr {
    char local[SMTP_LOCAL_MAX + 1];
    char domain[SMTP_DOMAIN_MAX + 1];
    char mailbox[SMTP_LOCAL_MAX + 1 + SMTP_DOMAIN_MAX + 1];
};

/* Reads an address for an account or alias of ours: a Dot-string local
 * part at a domain name, both lower-cased. Returns 0, or 1 after printing
 * "S is not an address: reason". */
int admin_addr_local(const struct admin_cmd *cmd, const char *s,
                     struct admin_addr *out);

/* Reads a target address (any mailbox; address literals and quoted local
 * parts allowed); the domain is lower-cased, the local part is kept as
 * given (admin_addr_lower() lowers it for a local target). Returns 0, or
 * 1 after printing why. */
int admin_addr_target(const struct admin_cmd *cmd, const char *s,
                      struct admin_addr *out);

/* Lower-cases the local part and the mailbox of a target found to be at
 * one of our domains (we keep and look up local parts in lower case). */
void admin_addr_lower(struct admin_addr *a);

/* Reads a domain name, lower-cased into out (SMTP_DOMAIN_MAX + 1).
 * Returns 0, or 1 after printing "S is not a domain: reason". */
int admin_addr_domain(const struct admin_cmd *cmd, const char *s, char *out);

/* Redis (admin_db.c). Every function that fails prints why, naming the
 * command, and returns -1 (or NULL). */

typedef struct admin_db admin_db_t;

/* Connects to the configured Redis; NULL after printing "cannot reach
 * redis at HOST:PORT: reason". */
admin_db_t *admin_db_open(const struct admin_cmd *cmd);
void admin_db_close(admin_db_t **db_p);

/* Runs one command given as a NULL-terminated list. A Redis error reply
 * is printed and counts as a failure. The reply belongs to the caller. */
store_reply_t *admin_db_cmd(admin_db_t *db, ...) __attribute__((sentinel));
store_reply_t *admin_db_cmdv(admin_db_t *db, int argc, const char *const *argv);

/* 1 or 0 for EXISTS key and SISMEMBER key member; -1 on failure. */
int admin_db_exists(admin_db_t *db, const char *key);
int admin_db_sismember(admin_db_t *db, const char *key, const char *member);

/* SMEMBERS key, sorted, as a new NULL-terminated array of new strings
 * (free with admin_strv_free()); *n gets the count. NULL on failure. */
char **admin_db_smembers(admin_db_t *db, const char *key, size_t *n);
void admin_strv_free(char ***v_p);

/* HGET key field as a new string, "" when there is none; NULL on
 * failure. */
char *admin_db_hget(admin_db_t *db, const char *key, const char *field);

/* A transaction: admin_db_watch() the keys the checks read, check, then
 * admin_db_multi(), queue the writes with admin_db_queue(), and
 * admin_db_exec(). exec returns 0 when it was applied, ADMIN_RETRY when a
 * watched key changed under us (nothing was written: check again), or -1.
 * admin_db_unwatch() gives up after a refusal. */
#define ADMIN_RETRY 2
#define ADMIN_TRIES 10
int admin_db_watch(admin_db_t *db, ...) __attribute__((sentinel));
int admin_db_unwatch(admin_db_t *db);
int admin_db_multi(admin_db_t *db);
int admin_db_queue(admin_db_t *db, ...) __attribute__((sentinel));
int admin_db_queuev(admin_db_t *db, int argc, const char *const *argv);
/* The replies of the queued commands are in *results when results is not
 * NULL (caller frees). */
int admin_db_exec(admin_db_t *db, store_reply_t **results);

/* Sets rc to what call (an attempt: WATCH, check, MULTI, EXEC) returns,
 * calling it again while it returns ADMIN_RETRY, at most ADMIN_TRIES
 * times; -1 (already printed) becomes the status 1. */
#define ADMIN_RETRYING(rc, cmd, call)                                          \
    do {                                                                       \
        int rc_ = ADMIN_RETRY;                                                 \
        for (int t_ = 0; t_ < ADMIN_TRIES && rc_ == ADMIN_RETRY; t_++)         \
            rc_ = (call);                                                      \
        if (rc_ == ADMIN_RETRY)                                                \
            rc_ = admin_fail(cmd, "gave up: the data kept changing under "     \
                                  "us (another admin at work?)");              \
        (rc) = rc_ < 0 ? 1 : rc_;                                              \
    } while (0)

/* Whether domain is one of ours (its samotop:{D}:domain hash exists): 1,
 * 0, or -1. */
int admin_db_domain_exists(admin_db_t *db, const char *domain);

/* What an address of ours is: ADMIN_ACCOUNT, ADMIN_ALIAS, 0 (nothing), or
 * -1. */
enum { ADMIN_ACCOUNT = 1, ADMIN_ALIAS = 2 };
int admin_db_addr_kind(admin_db_t *db, const struct admin_addr *a);

/* Sizes (admin_size.c). */

/* The largest size taken (8 PiB), so that usage counters in Redis
 * (64-bit) never overflow when quotas are added up. */
#define ADMIN_SIZE_MAX (1ull << 53)
#define ADMIN_SIZE_TEXT_MAX 32

/* Reads a size in bytes: digits with an optional K, M, G or T (powers of
 * 1024, case-insensitive, "B" or "iB" may follow), or "none" (0). Returns
 * 0 with *out set, or -1 with the reason in *why (static). */
int admin_size_parse(const char *s, uint64_t *out, const char **why);

/* Writes n as "BYTES" or "BYTES (1.5M)" into out. */
void admin_size_format(uint64_t n, char *out, size_t len);

/* Passwords (admin_password.c). */

/* Reads a new password for the account named: when standard input is a
 * terminal, asks twice without echo; otherwise takes its first line (the
 * line end dropped). Refuses an empty password, one holding a NUL byte and
 * one of more than ADMIN_PASSWORD_MAX bytes. Returns 0 with the password
 * in out (caller wipes it), or 1 after printing why. */
#define ADMIN_PASSWORD_MAX 1024
int admin_password_read(const struct admin_cmd *cmd, const char *account,
                        char out[ADMIN_PASSWORD_MAX + 1], size_t *len);

#endif
