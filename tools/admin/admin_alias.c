/*
 * admin_alias.c - samotop-admin alias: addresses of ours that forward to
 * other addresses, local or remote.
 *
 *   alias add ADDRESS TARGET [TARGET...]
 *   alias del ADDRESS [TARGET...]
 *   alias list [DOMAIN]
 *
 * An alias is samotop:{D}:alias:L (the set of its targets) plus L in
 * samotop:{D}:aliases. An address is never an account and an alias at
 * once: each verb refuses to shadow the other.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "bus/store_keys.h"
#include "lib/xalloc.h"

/* SADD/SREM members per command, under store_cmd()'s 64 arguments. */
#define CHUNK 60

static int alias_add(struct admin_cmd *cmd);
static int alias_del(struct admin_cmd *cmd);
static int alias_list(struct admin_cmd *cmd);

static const struct admin_sub alias_subs[] = {
    {"add", "ADDRESS TARGET [TARGET...]", 2, -1, 0,
     "Makes ADDRESS (at one of our domains) forward to each TARGET, a\n"
     "local or remote address. Adding to an alias that exists adds\n"
     "targets. Refused when ADDRESS is a user.",
     alias_add},
    {"del", "ADDRESS [TARGET...]", 1, -1, 0,
     "Removes the TARGETs from the alias, or the whole alias when none is\n"
     "given (or none is left).",
     alias_del},
    {"list", "[DOMAIN]", 0, 1, 0,
     "Lists the aliases of DOMAIN, or of every domain, one a line:\n"
     "  ADDRESS -> TARGET, TARGET...",
     alias_list},
    {NULL, NULL, 0, 0, 0, NULL, NULL}};

int
admin_alias(const config_t *cfg, int argc, char **argv)
{
    return admin_sub_dispatch(cfg, "alias",
                              "Aliases: addresses of ours "
                              "that forward mail.",
                              alias_subs, argc, argv);
}

static const char *
plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* Reads the targets given, in the form they are kept: the local part of
 * one at our domains in lower case. Returns 0, 1 (printed) or -1. */
static int
read_targets(const struct admin_cmd *cmd, admin_db_t *db,
             const struct admin_addr *alias, int n, char **args,
             struct admin_addr *out, bool warn)
{
    for (int i = 0; i < n; i++) {
        int local, kind;

        if (admin_addr_target(cmd, args[i], &out[i]) != 0)
            return 1;
        local = admin_db_domain_exists(db, out[i].domain);
        if (local < 0)
            return -1;
        if (!local)
            continue;
        admin_addr_lower(&out[i]);
        if (strcmp(out[i].mailbox, alias->mailbox) == 0) {
            if (warn)
                return admin_fail(cmd, "%s cannot forward to itself",
                                  alias->mailbox);
            continue;
        }
        if (!warn)
            continue;
        kind = admin_db_addr_kind(db, &out[i]);
        if (kind < 0)
            return -1;
        if (kind == 0)
            admin_warn(cmd, "%s is neither a user nor an alias (yet)",
                       out[i].mailbox);
    }
    return 0;
}

/* WATCHes the alias's keys and checks that its domain is ours and that it
 * is no account (and, when must_exist, that it is an alias). */
static int
watch_check(const struct admin_cmd *cmd, admin_db_t *db,
            const struct admin_addr *a, bool must_exist)
{
    char kdom[STORE_KEY_MAX], kuser[STORE_KEY_MAX], kalias[STORE_KEY_MAX];
    int local, kind, rc = 0;

    store_key_domain(kdom, a->domain);
    store_key_user(kuser, a->domain, a->local);
    store_key_alias(kalias, a->domain, a->local);
    if (admin_db_watch(db, kdom, kuser, kalias, NULL) != 0)
        return -1;
    local = admin_db_domain_exists(db, a->domain);
    if (local < 0)
        return -1;
    if (!local) {
        rc = admin_fail(cmd, "%s is not a local domain", a->domain);
    } else {
        kind = admin_db_addr_kind(db, a);
        if (kind < 0)
            return -1;
        if (kind == ADMIN_ACCOUNT && !must_exist)
            rc = admin_fail(cmd,
                            "%s is a user; an alias of that name "
                            "would shadow it",
                            a->mailbox);
        else if (kind != ADMIN_ALIAS && must_exist)
            rc = admin_fail(cmd, "no such alias %s%s", a->mailbox,
                            kind == ADMIN_ACCOUNT ? " (it is a user)" : "");
    }
    if (rc != 0)
        admin_db_unwatch(db);
    return rc;
}

/* Queues CMD key members..., CHUNK at a time; returns the number of
 * commands queued, or -1. */
static int
queue_members(admin_db_t *db, const char *cmdname, const char *key, int n,
              const struct admin_addr *members)
{
    const char *argv[CHUNK + 2];
    int queued = 0;

    for (int i = 0; i < n; i += CHUNK) {
        int argc = 0;

        argv[argc++] = cmdname;
        argv[argc++] = key;
        for (int k = i; k < n && k < i + CHUNK; k++)
            argv[argc++] = members[k].mailbox;
        if (admin_db_queuev(db, argc, argv) != 0)
            return -1;
        queued++;
    }
    return queued;
}

static int
add_try(const struct admin_cmd *cmd, admin_db_t *db, const struct admin_addr *a,
        int n, const struct admin_addr *targets, long long *added,
        long long *total)
{
    char kalias[STORE_KEY_MAX], kaliases[STORE_KEY_MAX];
    store_reply_t *res = NULL;
    int rc = watch_check(cmd, db, a, false), chunks;

    if (rc != 0)
        return rc;
    store_key_alias(kalias, a->domain, a->local);
    store_key_aliases(kaliases, a->domain);
    if (admin_db_multi(db) != 0)
        return -1;
    chunks = queue_members(db, "SADD", kalias, n, targets);
    if (chunks < 0 ||
        admin_db_queue(db, "SADD", kaliases, a->local, NULL) != 0 ||
        admin_db_queue(db, "SCARD", kalias, NULL) != 0)
        return -1;
    rc = admin_db_exec(db, &res);
    if (rc != 0)
        return rc;
    *added = 0;
    for (int i = 0; i < chunks; i++)
        *added += store_reply_int(store_reply_at(res, (size_t)i));
    *total = store_reply_int(store_reply_at(res, (size_t)chunks + 1));
    store_reply_free(&res);
    return 0;
}

static int
alias_add(struct admin_cmd *cmd)
{
    struct admin_addr a, *targets;
    long long added = 0, total = 0;
    int n = cmd->argc - 1, rc;
    admin_db_t *db;

    if (admin_addr_local(cmd, cmd->argv[0], &a) != 0)
        return 1;
    targets = xcalloc((size_t)n, sizeof(*targets));
    db = admin_db_open(cmd);
    if (db == NULL) {
        free(targets);
        return 1;
    }
    rc = read_targets(cmd, db, &a, n, cmd->argv + 1, targets, true);
    if (rc == 0)
        ADMIN_RETRYING(rc, cmd,
                       add_try(cmd, db, &a, n, targets, &added, &total));
    if (rc == 0)
        printf("alias %s: added %lld %s, %lld in all\n", a.mailbox, added,
               plural((size_t)added, "target", "targets"), total);
    admin_db_close(&db);
    free(targets);
    return rc < 0 ? 1 : rc;
}

static int
del_try(const struct admin_cmd *cmd, admin_db_t *db, const struct admin_addr *a,
        int n, const struct admin_addr *targets, size_t *left, size_t *removed)
{
    char kalias[STORE_KEY_MAX], kaliases[STORE_KEY_MAX];
    char **members = NULL;
    size_t count = 0;
    int rc = watch_check(cmd, db, a, true);

    if (rc != 0)
        return rc;
    store_key_alias(kalias, a->domain, a->local);
    store_key_aliases(kaliases, a->domain);
    *left = 0;
    if (n > 0) {
        members = admin_db_smembers(db, kalias, &count);
        if (members == NULL)
            return -1;
        /* Every target must be there; count what stays. */
        *left = count;
        for (size_t m = 0; m < count; m++)
            for (int i = 0; i < n; i++)
                if (strcmp(members[m], targets[i].mailbox) == 0) {
                    (*left)--;
                    break;
                }
        for (int i = 0; i < n && rc == 0; i++) {
            size_t m;

            for (m = 0; m < count; m++)
                if (strcmp(members[m], targets[i].mailbox) == 0)
                    break;
            if (m == count) {
                admin_db_unwatch(db);
                rc = admin_fail(cmd, "%s is not a target of %s",
                                targets[i].mailbox, a->mailbox);
            }
        }
        admin_strv_free(&members);
        if (rc != 0)
            return rc;
        *removed = count - *left;
    }
    if (admin_db_multi(db) != 0)
        return -1;
    if (*left > 0) {
        if (queue_members(db, "SREM", kalias, n, targets) < 0)
            return -1;
    } else if (admin_db_queue(db, "DEL", kalias, NULL) != 0 ||
               admin_db_queue(db, "SREM", kaliases, a->local, NULL) != 0) {
        return -1;
    }
    return admin_db_exec(db, NULL);
}

static int
alias_del(struct admin_cmd *cmd)
{
    struct admin_addr a, *targets;
    int n = cmd->argc - 1, rc;
    size_t left = 0, removed = 0;
    admin_db_t *db;

    if (admin_addr_local(cmd, cmd->argv[0], &a) != 0)
        return 1;
    targets = xcalloc((size_t)(n > 0 ? n : 1), sizeof(*targets));
    db = admin_db_open(cmd);
    if (db == NULL) {
        free(targets);
        return 1;
    }
    rc = read_targets(cmd, db, &a, n, cmd->argv + 1, targets, false);
    if (rc == 0)
        ADMIN_RETRYING(rc, cmd,
                       del_try(cmd, db, &a, n, targets, &left, &removed));
    if (rc == 0 && left == 0)
        printf("deleted alias %s\n", a.mailbox);
    else if (rc == 0)
        printf("alias %s: removed %zu %s, %zu left\n", a.mailbox, removed,
               plural(removed, "target", "targets"), left);
    admin_db_close(&db);
    free(targets);
    return rc < 0 ? 1 : rc;
}

static int
list_domain(admin_db_t *db, const char *domain)
{
    char kaliases[STORE_KEY_MAX], kalias[STORE_KEY_MAX];
    char **aliases, **targets;
    size_t n, nt;
    int rc = 0;

    aliases = admin_db_smembers(db, store_key_aliases(kaliases, domain), &n);
    if (aliases == NULL)
        return 1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        store_key_alias(kalias, domain, aliases[i]);
        targets = admin_db_smembers(db, kalias, &nt);
        if (targets == NULL) {
            rc = 1;
            break;
        }
        printf("%s@%s ->", aliases[i], domain);
        for (size_t k = 0; k < nt; k++)
            printf("%s %s", k ? "," : "", targets[k]);
        printf("\n");
        admin_strv_free(&targets);
    }
    admin_strv_free(&aliases);
    return rc;
}

static int
alias_list(struct admin_cmd *cmd)
{
    char domain[SMTP_DOMAIN_MAX + 1], kall[STORE_KEY_MAX];
    char **domains;
    size_t n = 0;
    admin_db_t *db;
    int rc = 0, local;

    if (cmd->argc == 1 && admin_addr_domain(cmd, cmd->argv[0], domain) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    if (cmd->argc == 1) {
        local = admin_db_domain_exists(db, domain);
        if (local < 0)
            rc = 1;
        else if (!local)
            rc = admin_fail(cmd, "%s is not a local domain", domain);
        else
            rc = list_domain(db, domain);
    } else {
        domains = admin_db_smembers(db, store_key_domains(kall), &n);
        if (domains == NULL)
            rc = 1;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = list_domain(db, domains[i]);
        admin_strv_free(&domains);
    }
    admin_db_close(&db);
    return rc;
}
