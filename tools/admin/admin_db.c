/*
 * admin_db.c - Redis for the account verbs: one sync store connection,
 * commands whose failures are printed where they happen, and the
 * WATCH/MULTI/EXEC steps every change goes through.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "bus/store_keys.h"
#include "lib/err.h"
#include "lib/xalloc.h"

#define CONNECT_TIMEOUT_MS 5000
#define MAX_ARGS 64

struct admin_db {
    const struct admin_cmd *cmd;
    store_t *store;
};

admin_db_t *
admin_db_open(const struct admin_cmd *cmd)
{
    char why[512];
    store_t *s = store_connect(cmd->cfg, CONNECT_TIMEOUT_MS, why, sizeof(why));
    admin_db_t *db;

    if (s == NULL) {
        admin_fail(cmd, "%s", why);
        return NULL;
    }
    db = xcalloc(1, sizeof(*db));
    db->cmd = cmd;
    db->store = s;
    return db;
}

void
admin_db_close(admin_db_t **db_p)
{
    admin_db_t *db = *db_p;

    if (db == NULL)
        return;
    store_destroy(&db->store);
    free(db);
    *db_p = NULL;
}

store_reply_t *
admin_db_cmdv(admin_db_t *db, int argc, const char *const *argv)
{
    store_reply_t *r = NULL;
    char why[512];

    if (store_cmd(db->store, &r, why, sizeof(why), argc, argv, NULL) != 0) {
        admin_fail(db->cmd, "%s: %s", argv[0], why);
        return NULL;
    }
    if (store_reply_type(r) == STORE_ERROR) {
        admin_fail(db->cmd, "redis %s: %s", argv[0], store_reply_str(r, NULL));
        store_reply_free(&r);
        return NULL;
    }
    return r;
}

/* Collects the NULL-terminated arguments after db; -1 when too many. */
static int
collect(va_list ap, const char **argv)
{
    int argc = 0;
    const char *a;

    while ((a = va_arg(ap, const char *)) != NULL) {
        if (argc == MAX_ARGS)
            return -1;
        argv[argc++] = a;
    }
    return argc;
}

store_reply_t *
admin_db_cmd(admin_db_t *db, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    int argc;

    va_start(ap, db);
    argc = collect(ap, argv);
    va_end(ap);
    if (argc <= 0) {
        admin_fail(db->cmd, "internal error: bad redis command");
        return NULL;
    }
    return admin_db_cmdv(db, argc, argv);
}

static int
int_reply(store_reply_t *r)
{
    int v;

    if (r == NULL)
        return -1;
    v = store_reply_int(r) != 0;
    store_reply_free(&r);
    return v;
}

int
admin_db_exists(admin_db_t *db, const char *key)
{
    return int_reply(admin_db_cmd(db, "EXISTS", key, NULL));
}

int
admin_db_sismember(admin_db_t *db, const char *key, const char *member)
{
    return int_reply(admin_db_cmd(db, "SISMEMBER", key, member, NULL));
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **
admin_db_smembers(admin_db_t *db, const char *key, size_t *n)
{
    store_reply_t *r = admin_db_cmd(db, "SMEMBERS", key, NULL);
    char **v;
    size_t count;

    *n = 0;
    if (r == NULL)
        return NULL;
    count = store_reply_count(r);
    v = xcalloc(count + 1, sizeof(*v));
    for (size_t i = 0; i < count; i++) {
        size_t len = 0;
        const char *s = store_reply_str(store_reply_at(r, i), &len);

        v[i] = s ? xstrndup(s, len) : xstrdup("");
    }
    store_reply_free(&r);
    qsort(v, count, sizeof(*v), cmp_str);
    *n = count;
    return v;
}

void
admin_strv_free(char ***v_p)
{
    char **v = *v_p;

    if (v == NULL)
        return;
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
    *v_p = NULL;
}

char *
admin_db_hget(admin_db_t *db, const char *key, const char *field)
{
    store_reply_t *r = admin_db_cmd(db, "HGET", key, field, NULL);
    const char *s;
    size_t len = 0;
    char *out;

    if (r == NULL)
        return NULL;
    s = store_reply_str(r, &len);
    out = s ? xstrndup(s, len) : xstrdup("");
    store_reply_free(&r);
    return out;
}

/* Runs a command that must answer +OK (or +QUEUED); 0 or -1. */
static int
status_cmd(admin_db_t *db, int argc, const char *const *argv, const char *want)
{
    store_reply_t *r = admin_db_cmdv(db, argc, argv);
    const char *s;
    int rc = 0;

    if (r == NULL)
        return -1;
    s = store_reply_str(r, NULL);
    if (s == NULL || strcmp(s, want) != 0) {
        admin_fail(db->cmd, "redis %s: unexpected reply", argv[0]);
        rc = -1;
    }
    store_reply_free(&r);
    return rc;
}

int
admin_db_watch(admin_db_t *db, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    int argc;

    argv[0] = "WATCH";
    va_start(ap, db);
    argc = collect(ap, argv + 1);
    va_end(ap);
    if (argc <= 0 || argc >= MAX_ARGS) {
        admin_fail(db->cmd, "internal error: bad WATCH");
        return -1;
    }
    return status_cmd(db, argc + 1, argv, "OK");
}

int
admin_db_unwatch(admin_db_t *db)
{
    const char *argv[] = {"UNWATCH"};

    return status_cmd(db, 1, argv, "OK");
}

int
admin_db_multi(admin_db_t *db)
{
    const char *argv[] = {"MULTI"};

    return status_cmd(db, 1, argv, "OK");
}

static void
discard(admin_db_t *db)
{
    store_reply_t *r = NULL;
    char why[256];

    /* Best effort: the connection is closed right after anyway. */
    store_cmdl(db->store, &r, why, sizeof(why), "DISCARD", NULL);
    store_reply_free(&r);
}

int
admin_db_queuev(admin_db_t *db, int argc, const char *const *argv)
{
    if (status_cmd(db, argc, argv, "QUEUED") != 0) {
        discard(db);
        return -1;
    }
    return 0;
}

int
admin_db_queue(admin_db_t *db, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    int argc;

    va_start(ap, db);
    argc = collect(ap, argv);
    va_end(ap);
    if (argc <= 0) {
        admin_fail(db->cmd, "internal error: bad redis command");
        discard(db);
        return -1;
    }
    return admin_db_queuev(db, argc, argv);
}

int
admin_db_exec(admin_db_t *db, store_reply_t **results)
{
    const char *argv[] = {"EXEC"};
    store_reply_t *r = admin_db_cmdv(db, 1, argv);

    if (results)
        *results = NULL;
    if (r == NULL)
        return -1;
    if (store_reply_type(r) == STORE_NIL) {
        /* A watched key changed: nothing was applied. */
        store_reply_free(&r);
        return ADMIN_RETRY;
    }
    for (size_t i = 0; i < store_reply_count(r); i++) {
        const store_reply_t *e = store_reply_at(r, i);

        if (store_reply_type(e) == STORE_ERROR) {
            admin_fail(db->cmd, "redis: %s (the change may be partial)",
                       store_reply_str(e, NULL));
            store_reply_free(&r);
            return -1;
        }
    }
    if (results)
        *results = r;
    else
        store_reply_free(&r);
    return 0;
}

int
admin_db_domain_exists(admin_db_t *db, const char *domain)
{
    char key[STORE_KEY_MAX];

    if (store_key_domain(key, domain) == NULL)
        return 0;
    return admin_db_exists(db, key);
}

int
admin_db_addr_kind(admin_db_t *db, const struct admin_addr *a)
{
    char key[STORE_KEY_MAX];
    int rc;

    if (store_key_user(key, a->domain, a->local) == NULL)
        return 0;
    rc = admin_db_exists(db, key);
    if (rc != 0)
        return rc < 0 ? -1 : ADMIN_ACCOUNT;
    if (store_key_alias(key, a->domain, a->local) == NULL)
        return 0;
    rc = admin_db_exists(db, key);
    if (rc != 0)
        return rc < 0 ? -1 : ADMIN_ALIAS;
    return 0;
}
