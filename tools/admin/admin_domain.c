/*
 * admin_domain.c - samotop-admin domain: the domains we take mail for.
 *
 *   domain add DOMAIN
 *   domain del DOMAIN [--force]
 *   domain list
 *   domain catchall DOMAIN ADDRESS|--none
 *
 * A domain is a member of samotop:domains plus its samotop:{D}:domain
 * hash; the account and alias verbs test the hash, which shares the
 * domain's hash slot with their own keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "bus/store_keys.h"

static int domain_add(struct admin_cmd *cmd);
static int domain_del(struct admin_cmd *cmd);
static int domain_list(struct admin_cmd *cmd);
static int domain_catchall(struct admin_cmd *cmd);

static const struct admin_sub domain_subs[] = {
    {"add", "DOMAIN", 1, 1, 0,
     "Makes DOMAIN one of ours: mail to its accounts and aliases is\n"
     "accepted and delivered here. A non-ASCII domain (bücher.example)\n"
     "is kept as its IDNA A-labels (xn--bcher-kva.example), and either\n"
     "spelling names it. Refused when it is ours already.",
     domain_add},
    {"del", "DOMAIN [--force]", 1, 1, ADMIN_OPT_FORCE,
     "Stops taking mail for DOMAIN. Refused while it still has accounts or\n"
     "aliases, unless --force is given, which deletes them too. Mail\n"
     "already delivered stays in the mailbox store.",
     domain_del},
    {"list", "", 0, 0, 0,
     "Lists our domains, one a line:\n"
     "  DOMAIN users=N aliases=N [catchall=ADDRESS] [disabled]",
     domain_list},
    {"catchall", "DOMAIN ADDRESS|--none", 1, 2, ADMIN_OPT_NONE,
     "Sends mail for unknown local parts of DOMAIN to ADDRESS (local or\n"
     "remote) instead of refusing it; --none removes the catch-all.",
     domain_catchall},
    {NULL, NULL, 0, 0, 0, NULL, NULL}};

int
admin_domain(const config_t *cfg, int argc, char **argv)
{
    return admin_sub_dispatch(cfg, "domain",
                              "The domains Samotop receives mail for.",
                              domain_subs, argc, argv);
}

static int
add_try(const struct admin_cmd *cmd, admin_db_t *db, const char *domain)
{
    char kall[STORE_KEY_MAX], kdom[STORE_KEY_MAX], now[32];
    int member, exists;

    store_key_domains(kall);
    store_key_domain(kdom, domain);
    if (admin_db_watch(db, kall, kdom, NULL) != 0)
        return -1;
    member = admin_db_sismember(db, kall, domain);
    exists = admin_db_exists(db, kdom);
    if (member < 0 || exists < 0)
        return -1;
    if (member || exists) {
        admin_db_unwatch(db);
        return admin_fail(cmd, "%s is already a local domain", domain);
    }
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
    if (admin_db_multi(db) != 0 ||
        admin_db_queue(db, "SADD", kall, domain, NULL) != 0 ||
        admin_db_queue(db, "HSET", kdom, "created", now, "catchall", "",
                       "disabled", "0", NULL) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

static int
domain_add(struct admin_cmd *cmd)
{
    char domain[SMTP_DOMAIN_MAX + 1];
    admin_db_t *db;
    int rc;

    if (admin_addr_domain(cmd, cmd->argv[0], domain) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    ADMIN_RETRYING(rc, cmd, add_try(cmd, db, domain));
    admin_db_close(&db);
    if (rc == 0)
        printf("added domain %s\n", domain);
    return rc;
}

static const char *
plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

static int
del_try(const struct admin_cmd *cmd, admin_db_t *db, const char *domain,
        size_t *nusers, size_t *naliases)
{
    char kall[STORE_KEY_MAX], kdom[STORE_KEY_MAX], kusers[STORE_KEY_MAX],
        kaliases[STORE_KEY_MAX], key[STORE_KEY_MAX];
    char **users = NULL, **aliases = NULL;
    int member, exists, rc = -1;

    store_key_domains(kall);
    store_key_domain(kdom, domain);
    store_key_users(kusers, domain);
    store_key_aliases(kaliases, domain);
    if (admin_db_watch(db, kall, kdom, kusers, kaliases, NULL) != 0)
        return -1;
    member = admin_db_sismember(db, kall, domain);
    exists = admin_db_exists(db, kdom);
    if (member < 0 || exists < 0)
        goto out;
    if (!member && !exists) {
        admin_db_unwatch(db);
        rc = admin_fail(cmd, "%s is not a local domain", domain);
        goto out;
    }
    users = admin_db_smembers(db, kusers, nusers);
    aliases = admin_db_smembers(db, kaliases, naliases);
    if (users == NULL || aliases == NULL)
        goto out;
    if ((*nusers || *naliases) && !(cmd->opts & ADMIN_OPT_FORCE)) {
        admin_db_unwatch(db);
        rc = admin_fail(cmd,
                        "%s still has %zu %s and %zu %s; --force "
                        "deletes them too",
                        domain, *nusers, plural(*nusers, "user", "users"),
                        *naliases, plural(*naliases, "alias", "aliases"));
        goto out;
    }
    if (admin_db_multi(db) != 0)
        goto out;
    for (size_t i = 0; i < *nusers; i++)
        if (store_key_user(key, domain, users[i]) == NULL ||
            admin_db_queue(db, "DEL", key, NULL) != 0)
            goto out;
    for (size_t i = 0; i < *naliases; i++)
        if (store_key_alias(key, domain, aliases[i]) == NULL ||
            admin_db_queue(db, "DEL", key, NULL) != 0)
            goto out;
    if (admin_db_queue(db, "DEL", kusers, kaliases, kdom, NULL) != 0 ||
        admin_db_queue(db, "SREM", kall, domain, NULL) != 0)
        goto out;
    rc = admin_db_exec(db, NULL);
out:
    admin_strv_free(&users);
    admin_strv_free(&aliases);
    return rc;
}

static int
domain_del(struct admin_cmd *cmd)
{
    char domain[SMTP_DOMAIN_MAX + 1];
    size_t nusers = 0, naliases = 0;
    admin_db_t *db;
    int rc;

    if (admin_addr_domain(cmd, cmd->argv[0], domain) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    ADMIN_RETRYING(rc, cmd, del_try(cmd, db, domain, &nusers, &naliases));
    admin_db_close(&db);
    if (rc != 0)
        return rc;
    if (nusers || naliases)
        printf("deleted domain %s with %zu %s and %zu %s\n", domain, nusers,
               plural(nusers, "user", "users"), naliases,
               plural(naliases, "alias", "aliases"));
    else
        printf("deleted domain %s\n", domain);
    return 0;
}

static int
domain_list(struct admin_cmd *cmd)
{
    char kall[STORE_KEY_MAX], kdom[STORE_KEY_MAX], kusers[STORE_KEY_MAX],
        kaliases[STORE_KEY_MAX];
    char **domains;
    size_t n;
    admin_db_t *db = admin_db_open(cmd);
    int rc = 0;

    if (db == NULL)
        return 1;
    domains = admin_db_smembers(db, store_key_domains(kall), &n);
    if (domains == NULL) {
        admin_db_close(&db);
        return 1;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *d = domains[i];
        store_reply_t *u, *a, *h;
        const char *catchall, *disabled;

        store_key_domain(kdom, d);
        store_key_users(kusers, d);
        store_key_aliases(kaliases, d);
        u = admin_db_cmd(db, "SCARD", kusers, NULL);
        a = u ? admin_db_cmd(db, "SCARD", kaliases, NULL) : NULL;
        h = a ? admin_db_cmd(db, "HMGET", kdom, "catchall", "disabled", NULL)
              : NULL;
        if (h == NULL) {
            rc = 1;
        } else {
            catchall = store_reply_str(store_reply_at(h, 0), NULL);
            disabled = store_reply_str(store_reply_at(h, 1), NULL);
            printf("%s users=%lld aliases=%lld", d, store_reply_int(u),
                   store_reply_int(a));
            if (catchall && *catchall)
                printf(" catchall=%s", catchall);
            if (disabled && strcmp(disabled, "1") == 0)
                printf(" disabled");
            printf("\n");
        }
        store_reply_free(&u);
        store_reply_free(&a);
        store_reply_free(&h);
    }
    admin_strv_free(&domains);
    admin_db_close(&db);
    return rc;
}

static int
catchall_try(const struct admin_cmd *cmd, admin_db_t *db, const char *domain,
             const char *target)
{
    char kdom[STORE_KEY_MAX];
    int exists;

    store_key_domain(kdom, domain);
    if (admin_db_watch(db, kdom, NULL) != 0)
        return -1;
    exists = admin_db_exists(db, kdom);
    if (exists < 0)
        return -1;
    if (!exists) {
        admin_db_unwatch(db);
        return admin_fail(cmd, "%s is not a local domain", domain);
    }
    if (admin_db_multi(db) != 0 ||
        admin_db_queue(db, "HSET", kdom, "catchall", target, NULL) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

static int
domain_catchall(struct admin_cmd *cmd)
{
    char domain[SMTP_DOMAIN_MAX + 1];
    struct admin_addr target;
    bool none = (cmd->opts & ADMIN_OPT_NONE) != 0;
    admin_db_t *db;
    int rc;

    if ((cmd->argc == 2) == none) {
        fprintf(stderr, "%s: give either an ADDRESS or --none\n", cmd->name);
        fprintf(stderr, "usage: samotop-admin domain catchall DOMAIN "
                        "ADDRESS|--none\n");
        return 2;
    }
    if (admin_addr_domain(cmd, cmd->argv[0], domain) != 0)
        return 1;
    if (!none && admin_addr_target(cmd, cmd->argv[1], &target) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    if (!none) {
        int local = admin_db_domain_exists(db, target.domain), kind = 0;

        if (local > 0) {
            admin_addr_lower(&target);
            kind = admin_db_addr_kind(db, &target);
            if (kind == 0)
                admin_warn(cmd,
                           "%s is neither a user nor an alias "
                           "(yet)",
                           target.mailbox);
        }
        if (local < 0 || kind < 0) {
            admin_db_close(&db);
            return 1;
        }
    }
    ADMIN_RETRYING(rc, cmd,
                   catchall_try(cmd, db, domain, none ? "" : target.mailbox));
    admin_db_close(&db);
    if (rc == 0 && none)
        printf("domain %s: no catch-all\n", domain);
    else if (rc == 0)
        printf("domain %s: catch-all %s\n", domain, target.mailbox);
    return rc;
}
