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
 *   user show ADDRESS
 *   user quota ADDRESS SIZE
 *   user quota-recount ADDRESS
 *
 * The password is stored only as lib/passwd.h's scrypt string, and
 * neither it nor the hash is ever printed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin.h"
#include "bus/store_keys.h"
#include "lib/passwd.h"
#include "lib/xalloc.h"

static int user_add(struct admin_cmd *cmd);
static int user_passwd(struct admin_cmd *cmd);
static int user_del(struct admin_cmd *cmd);
static int user_list(struct admin_cmd *cmd);
static int user_disable(struct admin_cmd *cmd);
static int user_enable(struct admin_cmd *cmd);
static int user_show(struct admin_cmd *cmd);
static int user_quota(struct admin_cmd *cmd);
static int user_recount(struct admin_cmd *cmd);

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
     "Deletes the account. Its mail stays in the mailbox store, and so\n"
     "does the count of the bytes it takes: the address added again\n"
     "finds both. (After removing its Maildir by hand, run quota-recount\n"
     "once the address is added again.)",
     user_del},
    {"list", "[DOMAIN]", 0, 1, 0,
     "Lists the accounts of DOMAIN, or of every domain, one a line:\n"
     "  ADDRESS [disabled] [quota=BYTES] [used=BYTES]\n"
     "(quota when one is set, used when any mail is counted).",
     user_list},
    {"disable", "ADDRESS", 1, 1, 0,
     "Stops the account from logging in; mail to it is still accepted.",
     user_disable},
    {"enable", "ADDRESS", 1, 1, 0, "Lets a disabled account log in again.",
     user_enable},
    {"show", "ADDRESS", 1, 1, 0,
     "Prints the account: address, disabled, created, quota and used\n"
     "(bytes its mail takes), one \"name: value\" a line.",
     user_show},
    {"quota", "ADDRESS SIZE", 2, 2, 0,
     "Sets the most bytes the account's mail may take: SIZE is a number\n"
     "of bytes, or one with K, M, G or T (powers of 1024); \"none\" or 0\n"
     "removes the quota. Mail that would go over it is refused with\n"
     "452 4.2.2 (at RCPT and at delivery); what is stored stays.",
     user_quota},
    {"quota-recount", "ADDRESS", 1, 1, 0,
     "Counts the bytes in the account's Maildir (every folder) again and\n"
     "stores that as its usage, for when the count drifted. Run it on the\n"
     "host that holds the mail (the \"data\" folder).",
     user_recount},
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

/* The usage count is kept: the mail it counts stays in the store, and an
 * account added again under the address would otherwise start from 0
 * with that mail there, under its quota by as much. */
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
    char kusers[STORE_KEY_MAX], kuser[STORE_KEY_MAX], kusage[STORE_KEY_MAX];
    char **users;
    size_t n;
    int rc = 0;

    users = admin_db_smembers(db, store_key_users(kusers, domain), &n);
    if (users == NULL)
        return 1;
    store_key_usage(kusage, domain);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *disabled, *quota = NULL, *used = NULL;

        store_key_user(kuser, domain, users[i]);
        disabled = admin_db_hget(db, kuser, "disabled");
        if (disabled != NULL)
            quota = admin_db_hget(db, kuser, "quota");
        if (quota != NULL)
            used = admin_db_hget(db, kusage, users[i]);
        if (used == NULL) {
            rc = 1;
        } else {
            printf("%s@%s%s", users[i], domain,
                   strcmp(disabled, "1") == 0 ? " disabled" : "");
            if (strtoull(quota, NULL, 10) > 0)
                printf(" quota=%s", quota);
            if (strtoull(used, NULL, 10) > 0)
                printf(" used=%s", used);
            printf("\n");
        }
        free(disabled);
        free(quota);
        free(used);
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

static int
user_show(struct admin_cmd *cmd)
{
    char kuser[STORE_KEY_MAX], kusage[STORE_KEY_MAX], q[64], u[64];
    char *disabled = NULL, *created = NULL, *quota = NULL, *used = NULL;
    struct admin_addr a;
    admin_db_t *db;
    int rc;

    if (admin_addr_local(cmd, cmd->argv[0], &a) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    rc = check(cmd, db, &a, ADMIN_ACCOUNT);
    if (rc != 0)
        goto out;
    store_key_user(kuser, a.domain, a.local);
    store_key_usage(kusage, a.domain);
    if ((disabled = admin_db_hget(db, kuser, "disabled")) == NULL ||
        (created = admin_db_hget(db, kuser, "created")) == NULL ||
        (quota = admin_db_hget(db, kuser, "quota")) == NULL ||
        (used = admin_db_hget(db, kusage, a.local)) == NULL) {
        rc = 1;
        goto out;
    }
    if (strtoull(quota, NULL, 10) > 0)
        admin_size_format(strtoull(quota, NULL, 10), q, sizeof(q));
    else
        snprintf(q, sizeof(q), "none");
    admin_size_format(strtoull(used, NULL, 10), u, sizeof(u));
    printf("address: %s\ndisabled: %s\ncreated: %s\nquota: %s\nused: %s\n",
           a.mailbox, strcmp(disabled, "1") == 0 ? "yes" : "no", created, q,
           u);
out:
    free(disabled);
    free(created);
    free(quota);
    free(used);
    admin_db_close(&db);
    return rc < 0 ? 1 : rc;
}

static int
quota_try(const struct admin_cmd *cmd, admin_db_t *db,
          const struct admin_addr *a, uint64_t bytes)
{
    char kuser[STORE_KEY_MAX], num[32];
    int rc = watch_check(cmd, db, a, ADMIN_ACCOUNT);

    if (rc != 0)
        return rc;
    store_key_user(kuser, a->domain, a->local);
    snprintf(num, sizeof(num), "%" PRIu64, bytes);
    if (admin_db_multi(db) != 0 ||
        (bytes > 0
             ? admin_db_queue(db, "HSET", kuser, "quota", num, NULL)
             : admin_db_queue(db, "HDEL", kuser, "quota", NULL)) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

static int
user_quota(struct admin_cmd *cmd)
{
    struct admin_addr a;
    const char *why;
    admin_db_t *db;
    uint64_t bytes;
    char text[64];
    int rc;

    if (admin_addr_local(cmd, cmd->argv[0], &a) != 0)
        return 1;
    if (admin_size_parse(cmd->argv[1], &bytes, &why) != 0) {
        fprintf(stderr, "%s: %s is not a size: %s\n", cmd->name,
                cmd->argv[1], why);
        return 2;
    }
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    ADMIN_RETRYING(rc, cmd, quota_try(cmd, db, &a, bytes));
    admin_db_close(&db);
    if (rc == 0 && bytes == 0)
        printf("no quota for user %s\n", a.mailbox);
    else if (rc == 0) {
        admin_size_format(bytes, text, sizeof(text));
        printf("quota of user %s: %s\n", a.mailbox, text);
    }
    return rc;
}

/* Adds up the sizes of the regular files in dirfd's subfolder sub. */
static int
sum_dir(int dirfd, const char *sub, uint64_t *sum, uint64_t *files)
{
    int fd = openat(dirfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    struct dirent *de;
    struct stat st;
    DIR *d;

    if (fd < 0)
        return 0; /* a folder never delivered to has no new/ or cur/ */
    if ((d = fdopendir(fd)) == NULL) {
        close(fd);
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode)) {
            *sum += (uint64_t)st.st_size;
            (*files)++;
        }
    }
    closedir(d);
    return 0;
}

/* The bytes of every message of the Maildir at fd: new/ and cur/ of the
 * INBOX and of each Maildir++ folder (".Name"); tmp/ holds no mail yet. */
static int
sum_maildir(int fd, uint64_t *sum, uint64_t *files)
{
    struct dirent *de;
    DIR *d;
    int dup_fd, rc = 0;

    if (sum_dir(fd, "new", sum, files) != 0 ||
        sum_dir(fd, "cur", sum, files) != 0)
        return -1;
    if ((dup_fd = dup(fd)) < 0 || (d = fdopendir(dup_fd)) == NULL) {
        if (dup_fd >= 0)
            close(dup_fd);
        return -1;
    }
    while (rc == 0 && (de = readdir(d)) != NULL) {
        int sub;

        if (de->d_name[0] != '.' || strcmp(de->d_name, ".") == 0 ||
            strcmp(de->d_name, "..") == 0)
            continue;
        sub = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (sub < 0)
            continue; /* a file such as .uidvalidity, not a folder */
        rc = sum_dir(sub, "new", sum, files) != 0 ||
                     sum_dir(sub, "cur", sum, files) != 0
                 ? -1
                 : 0;
        close(sub);
    }
    closedir(d);
    return rc;
}

static int
user_recount(struct admin_cmd *cmd)
{
    char kusage[STORE_KEY_MAX], num[32], text[64], *path;
    uint64_t sum = 0, files = 0;
    struct admin_addr a;
    admin_db_t *db;
    int rc, fd;

    if (admin_addr_local(cmd, cmd->argv[0], &a) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    rc = check(cmd, db, &a, ADMIN_ACCOUNT);
    if (rc != 0)
        goto out;
    /* The layout of actors/mailbox/maildir.h: data/mail/DOMAIN/LOCAL. */
    path = xasprintf("%s/mail/%s/%s", config_str(cmd->cfg, "data"), a.domain,
                     a.local);
    fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0 && errno != ENOENT) {
        rc = admin_fail(cmd, "cannot open %s: %s", path, strerror(errno));
        free(path);
        goto out;
    }
    if (fd >= 0 && sum_maildir(fd, &sum, &files) != 0)
        rc = admin_fail(cmd, "cannot read %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(path);
    if (rc != 0)
        goto out;
    /* XXX: a delivery between the walk and the HSET is lost from the
     * count; run it when the account is quiet. */
    store_key_usage(kusage, a.domain);
    snprintf(num, sizeof(num), "%" PRIu64, sum);
    {
        store_reply_t *r = admin_db_cmd(db, "HSET", kusage, a.local, num,
                                        NULL);

        if (r == NULL)
            rc = 1;
        store_reply_free(&r);
    }
    if (rc == 0) {
        admin_size_format(sum, text, sizeof(text));
        printf("usage of user %s: %s in %" PRIu64 " messages\n", a.mailbox,
               text, files);
    }
out:
    admin_db_close(&db);
    return rc < 0 ? 1 : rc;
}
