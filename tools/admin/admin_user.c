/*
 * admin_user.c - samotop-admin user: accounts, which can log in and have a
 * mailbox.
 *
 *   user add ADDRESS          (password: first line of stdin, or asked)
 *   user passwd ADDRESS       (the same)
 *   user del ADDRESS
 *   user list [DOMAIN]
 *   user disable ADDRESS
 *   user enable ADDRESS
 *
 * The password is stored only as lib/passwd.h's scrypt string, and
 * neither it nor the hash is ever printed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "admin.h"
#include "bus/store_keys.h"
#include "lib/passwd.h"

static int user_add(struct admin_cmd *cmd);
static int user_passwd(struct admin_cmd *cmd);
static int user_del(struct admin_cmd *cmd);
static int user_list(struct admin_cmd *cmd);
static int user_disable(struct admin_cmd *cmd);
static int user_enable(struct admin_cmd *cmd);

#define PW_FROM                                                                \
    "The password is the first line of standard input; on a terminal it\n"     \
    "is asked for twice, without echo. An empty one is refused."

static const struct admin_sub user_subs[] = {
    {"add", "ADDRESS", 1, 1, 0,
     "Creates an account at one of our domains.\n" PW_FROM "\n"
     "Refused when the address is an account or an alias already.",
     user_add},
    {"passwd", "ADDRESS", 1, 1, 0, "Sets a new password.\n" PW_FROM,
     user_passwd},
    {"del", "ADDRESS", 1, 1, 0,
     "Deletes the account. Its mail stays in the mailbox store.", user_del},
    {"list", "[DOMAIN]", 0, 1, 0,
     "Lists the accounts of DOMAIN, or of every domain, one a line:\n"
     "  ADDRESS [disabled]",
     user_list},
    {"disable", "ADDRESS", 1, 1, 0,
     "Stops the account from logging in; mail to it is still accepted.",
     user_disable},
    {"enable", "ADDRESS", 1, 1, 0, "Lets a disabled account log in again.",
     user_enable},
    {NULL, NULL, 0, 0, 0, NULL, NULL}};

int
admin_user(const config_t *cfg, int argc, char **argv)
{
    return admin_sub_dispatch(cfg, "user",
                              "Accounts: addresses that log in "
                              "and have a mailbox.",
                              user_subs, argc, argv);
}

/* The checks every account change starts with, also run before asking for
 * a password so that nobody types one for nothing. want is what the
 * address must be now: ADMIN_ACCOUNT, or 0 for a new one. Returns 0, 1
 * after printing a refusal, or -1. */
static int
check(const struct admin_cmd *cmd, admin_db_t *db, const struct admin_addr *a,
      int want)
{
    int local = admin_db_domain_exists(db, a->domain), kind;

    if (local < 0)
        return -1;
    if (!local)
        return admin_fail(cmd, "%s is not a local domain", a->domain);
    kind = admin_db_addr_kind(db, a);
    if (kind < 0)
        return -1;
    if (want == 0 && kind == ADMIN_ACCOUNT)
        return admin_fail(cmd, "user %s exists already", a->mailbox);
    if (want == 0 && kind == ADMIN_ALIAS)
        return admin_fail(cmd,
                          "%s is an alias; a user of that name "
                          "would shadow it",
                          a->mailbox);
    if (want == ADMIN_ACCOUNT && kind != ADMIN_ACCOUNT)
        return admin_fail(cmd, "no such user %s%s", a->mailbox,
                          kind == ADMIN_ALIAS ? " (it is an alias)" : "");
    return 0;
}

/* WATCHes the keys check() reads, then runs it; UNWATCHes on a refusal. */
static int
watch_check(const struct admin_cmd *cmd, admin_db_t *db,
            const struct admin_addr *a, int want)
{
    char kdom[STORE_KEY_MAX], kuser[STORE_KEY_MAX], kalias[STORE_KEY_MAX];
    int rc;

    store_key_domain(kdom, a->domain);
    store_key_user(kuser, a->domain, a->local);
    store_key_alias(kalias, a->domain, a->local);
    if (admin_db_watch(db, kdom, kuser, kalias, NULL) != 0)
        return -1;
    rc = check(cmd, db, a, want);
    if (rc > 0)
        admin_db_unwatch(db);
    return rc;
}

static int
add_try(const struct admin_cmd *cmd, admin_db_t *db, const struct admin_addr *a,
        const char *hash)
{
    char kusers[STORE_KEY_MAX], kuser[STORE_KEY_MAX], now[32];
    int rc = watch_check(cmd, db, a, 0);

    if (rc != 0)
        return rc;
    store_key_users(kusers, a->domain);
    store_key_user(kuser, a->domain, a->local);
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
    if (admin_db_multi(db) != 0 ||
        admin_db_queue(db, "HSET", kuser, "pw", hash, "disabled", "0",
                       "created", now, NULL) != 0 ||
        admin_db_queue(db, "SADD", kusers, a->local, NULL) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

static int
passwd_try(const struct admin_cmd *cmd, admin_db_t *db,
           const struct admin_addr *a, const char *hash)
{
    char kuser[STORE_KEY_MAX];
    int rc = watch_check(cmd, db, a, ADMIN_ACCOUNT);

    if (rc != 0)
        return rc;
    store_key_user(kuser, a->domain, a->local);
    if (admin_db_multi(db) != 0 ||
        admin_db_queue(db, "HSET", kuser, "pw", hash, NULL) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

/* user add and user passwd: check, read the password, hash, store. */
static int
set_password(struct admin_cmd *cmd, int want)
{
    char pw[ADMIN_PASSWORD_MAX + 1], hash[PASSWD_MAX];
    struct admin_addr a;
    size_t len = 0;
    admin_db_t *db;
    int rc;

    if (admin_addr_local(cmd, cmd->argv[0], &a) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    rc = check(cmd, db, &a, want);
    if (rc != 0)
        goto out;
    rc = admin_password_read(cmd, a.mailbox, pw, &len);
    if (rc != 0)
        goto out;
    rc = passwd_hash(pw, len, hash, sizeof(hash));
    OPENSSL_cleanse(pw, sizeof(pw));
    if (rc != 0) {
        rc = admin_fail(cmd, "cannot hash the password (OpenSSL failed)");
        goto out;
    }
    if (want == 0)
        ADMIN_RETRYING(rc, cmd, add_try(cmd, db, &a, hash));
    else
        ADMIN_RETRYING(rc, cmd, passwd_try(cmd, db, &a, hash));
    OPENSSL_cleanse(hash, sizeof(hash));
    if (rc == 0)
        printf("%s %s\n", want == 0 ? "added user" : "new password for",
               a.mailbox);
out:
    admin_db_close(&db);
    return rc < 0 ? 1 : rc;
}

static int
user_add(struct admin_cmd *cmd)
{
    return set_password(cmd, 0);
}

static int
user_passwd(struct admin_cmd *cmd)
{
    return set_password(cmd, ADMIN_ACCOUNT);
}

static int
del_try(const struct admin_cmd *cmd, admin_db_t *db, const struct admin_addr *a)
{
    char kusers[STORE_KEY_MAX], kuser[STORE_KEY_MAX];
    int rc = watch_check(cmd, db, a, ADMIN_ACCOUNT);

    if (rc != 0)
        return rc;
    store_key_users(kusers, a->domain);
    store_key_user(kuser, a->domain, a->local);
    if (admin_db_multi(db) != 0 ||
        admin_db_queue(db, "DEL", kuser, NULL) != 0 ||
        admin_db_queue(db, "SREM", kusers, a->local, NULL) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

static int
flag_try(const struct admin_cmd *cmd, admin_db_t *db,
         const struct admin_addr *a, const char *disabled)
{
    char kuser[STORE_KEY_MAX];
    int rc = watch_check(cmd, db, a, ADMIN_ACCOUNT);

    if (rc != 0)
        return rc;
    store_key_user(kuser, a->domain, a->local);
    if (admin_db_multi(db) != 0 ||
        admin_db_queue(db, "HSET", kuser, "disabled", disabled, NULL) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

/* user del, disable and enable: what = NULL deletes, else it is the new
 * value of the disabled field. */
static int
change(struct admin_cmd *cmd, const char *what, const char *done)
{
    struct admin_addr a;
    admin_db_t *db;
    int rc;

    if (admin_addr_local(cmd, cmd->argv[0], &a) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    if (what == NULL)
        ADMIN_RETRYING(rc, cmd, del_try(cmd, db, &a));
    else
        ADMIN_RETRYING(rc, cmd, flag_try(cmd, db, &a, what));
    admin_db_close(&db);
    if (rc == 0)
        printf("%s user %s\n", done, a.mailbox);
    return rc;
}

static int
user_del(struct admin_cmd *cmd)
{
    return change(cmd, NULL, "deleted");
}

static int
user_disable(struct admin_cmd *cmd)
{
    return change(cmd, "1", "disabled");
}

static int
user_enable(struct admin_cmd *cmd)
{
    return change(cmd, "0", "enabled");
}

static int
list_domain(admin_db_t *db, const char *domain)
{
    char kusers[STORE_KEY_MAX], kuser[STORE_KEY_MAX];
    char **users;
    size_t n;
    int rc = 0;

    users = admin_db_smembers(db, store_key_users(kusers, domain), &n);
    if (users == NULL)
        return 1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *disabled;

        store_key_user(kuser, domain, users[i]);
        disabled = admin_db_hget(db, kuser, "disabled");
        if (disabled == NULL) {
            rc = 1;
            break;
        }
        printf("%s@%s%s\n", users[i], domain,
               strcmp(disabled, "1") == 0 ? " disabled" : "");
        free(disabled);
    }
    admin_strv_free(&users);
    return rc;
}

static int
user_list(struct admin_cmd *cmd)
{
    char domain[SMTP_DOMAIN_MAX + 1], kall[STORE_KEY_MAX];
    char **domains = NULL;
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
