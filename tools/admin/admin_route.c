/*
 * admin_route.c - samotop-admin route: static next hops for the relay.
 *
 *   route add DOMAIN HOST:PORT [--tls required|opportunistic]
 *   route del DOMAIN
 *   route list
 *
 * A route is one field of the hash samotop:routes (schemas/redis.md): the
 * destination domain in lower case, or "*" for the smarthost that takes
 * every domain without a route of its own, mapped to
 * "HOST:PORT;tls=required" or "HOST:PORT;tls=opportunistic". HOST is a
 * host name, an IPv4 address or a bracketed IPv6 address. Without a route
 * the relay looks up the domain's MX records.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "bus/store_keys.h"
#include "lib/config.h"
#include "lib/xalloc.h"

#define ROUTE_VALUE_MAX (SMTP_DOMAIN_MAX + 64)

static int route_add(struct admin_cmd *cmd);
static int route_del(struct admin_cmd *cmd);
static int route_list(struct admin_cmd *cmd);

static const struct admin_sub route_subs[] = {
    {"add", "DOMAIN HOST:PORT [--tls required|opportunistic]", 2, 2, 0,
     "Sends mail for DOMAIN (\"*\": every domain without a route of its\n"
     "own, a smarthost) to HOST:PORT instead of DOMAIN's MX hosts. HOST is\n"
     "a host name, an IPv4 address or an IPv6 address in brackets. With\n"
     "--tls required the relay defers the mail rather than send it without\n"
     "STARTTLS; opportunistic (the default) uses STARTTLS when offered.\n"
     "A route that exists is replaced.",
     route_add},
    {"del", "DOMAIN", 1, 1, 0, "Removes DOMAIN's route (\"*\": the smarthost).",
     route_del},
    {"list", "", 0, 0, 0,
     "Lists the routes, one a line, the smarthost last:\n"
     "  DOMAIN HOST:PORT tls=required|opportunistic",
     route_list},
    {NULL, NULL, 0, 0, 0, NULL, NULL}};

/* --tls VALUE, taken out of argv before the sub-verb table sees it. */
static const char *tls_opt;
static bool tls_bad;

static int
take_tls(int argc, char **argv)
{
    int n = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            while (i < argc)
                argv[n++] = argv[i++];
            break;
        }
        if (strcmp(argv[i], "--tls") == 0) {
            if (i + 1 >= argc) {
                tls_bad = true;
                continue;
            }
            tls_opt = argv[++i];
            continue;
        }
        if (strncmp(argv[i], "--tls=", 6) == 0) {
            tls_opt = argv[i] + 6;
            continue;
        }
        argv[n++] = argv[i];
    }
    argv[n] = NULL;
    return n;
}

int
admin_route(const config_t *cfg, int argc, char **argv)
{
    char **args = xcalloc((size_t)argc + 1, sizeof(*args));
    int n, rc;

    memcpy(args, argv, (size_t)argc * sizeof(*args));
    n = take_tls(argc, args);
    rc = admin_sub_dispatch(cfg, "route",
                            "Routes: next hops for destination domains.",
                            route_subs, n, args);
    free(args);
    return rc;
}

/* DOMAIN or "*", lower-cased into out. */
static int
read_domain(const struct admin_cmd *cmd, const char *s, char *out)
{
    if (strcmp(s, "*") == 0) {
        snprintf(out, SMTP_DOMAIN_MAX + 1, "*");
        return 0;
    }
    return admin_addr_domain(cmd, s, out);
}

/* HOST:PORT checked and written back normalised (host name lower-cased)
 * into out. */
static int
read_hop(const struct admin_cmd *cmd, const char *s, char *out, size_t outlen)
{
    char host[SMTP_DOMAIN_MAX + 1], name[SMTP_DOMAIN_MAX + 1];
    unsigned char ip[16];
    int port;

    if (config_split_addr(s, host, sizeof(host), &port) != 0)
        return admin_fail(cmd,
                          "%s is not HOST:PORT (a port from 1 to 65535; an "
                          "IPv6 address in brackets)",
                          s);
    if (s[0] == '[') {
        if (inet_pton(AF_INET6, host, ip) != 1)
            return admin_fail(cmd, "%s is not an IPv6 address", host);
        snprintf(out, outlen, "[%s]:%d", host, port);
        return 0;
    }
    if (inet_pton(AF_INET, host, ip) == 1) {
        snprintf(out, outlen, "%s:%d", host, port);
        return 0;
    }
    if (strchr(host, ':'))
        return admin_fail(cmd, "%s: put an IPv6 address in brackets", s);
    if (admin_addr_domain(cmd, host, name) != 0)
        return 1;
    snprintf(out, outlen, "%s:%d", name, port);
    return 0;
}

static int
route_add(struct admin_cmd *cmd)
{
    char domain[SMTP_DOMAIN_MAX + 1], hop[ROUTE_VALUE_MAX],
        value[ROUTE_VALUE_MAX + 32], key[STORE_KEY_MAX];
    const char *tls = tls_opt ? tls_opt : "opportunistic";
    store_reply_t *r;
    admin_db_t *db;
    char *old;
    int rc = 0;

    if (tls_bad ||
        (strcmp(tls, "required") != 0 && strcmp(tls, "opportunistic") != 0)) {
        fprintf(stderr, "%s: --tls takes required or opportunistic\n",
                cmd->name);
        fprintf(stderr, "usage: samotop-admin route add DOMAIN HOST:PORT "
                        "[--tls required|opportunistic]\n");
        return 2;
    }
    if (read_domain(cmd, cmd->argv[0], domain) != 0 ||
        read_hop(cmd, cmd->argv[1], hop, sizeof(hop)) != 0)
        return 1;
    snprintf(value, sizeof(value), "%s;tls=%s", hop, tls);
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    store_key_routes(key);
    old = admin_db_hget(db, key, domain);
    r = old ? admin_db_cmd(db, "HSET", key, domain, value, NULL) : NULL;
    if (r == NULL) {
        rc = 1;
    } else if (*old && strcmp(old, value) != 0) {
        printf("route %s: %s tls=%s (was %s)\n", domain, hop, tls, old);
    } else {
        printf("route %s: %s tls=%s\n", domain, hop, tls);
    }
    store_reply_free(&r);
    free(old);
    admin_db_close(&db);
    return rc;
}

static int
no_tls(struct admin_cmd *cmd)
{
    if (tls_opt == NULL && !tls_bad)
        return 0;
    fprintf(stderr, "%s: --tls is only for route add\n", cmd->name);
    return 2;
}

static int
route_del(struct admin_cmd *cmd)
{
    char domain[SMTP_DOMAIN_MAX + 1], key[STORE_KEY_MAX];
    store_reply_t *r;
    admin_db_t *db;
    int rc;

    if ((rc = no_tls(cmd)) != 0)
        return rc;
    if (read_domain(cmd, cmd->argv[0], domain) != 0)
        return 1;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    r = admin_db_cmd(db, "HDEL", store_key_routes(key), domain, NULL);
    if (r == NULL)
        rc = 1;
    else if (store_reply_int(r) == 0)
        rc = admin_fail(cmd, "no route for %s", domain);
    else
        printf("deleted route %s\n", domain);
    store_reply_free(&r);
    admin_db_close(&db);
    return rc;
}

struct route {
    char *domain, *value;
};

static int
cmp_route(const void *a, const void *b)
{
    const struct route *x = a, *y = b;

    /* The smarthost, the fallback, comes last. */
    if (strcmp(x->domain, "*") == 0 || strcmp(y->domain, "*") == 0)
        return strcmp(y->domain, x->domain);
    return strcmp(x->domain, y->domain);
}

static int
route_list(struct admin_cmd *cmd)
{
    char key[STORE_KEY_MAX];
    store_reply_t *r;
    struct route *v;
    admin_db_t *db;
    size_t n;
    int rc;

    if ((rc = no_tls(cmd)) != 0)
        return rc;
    db = admin_db_open(cmd);
    if (db == NULL)
        return 1;
    r = admin_db_cmd(db, "HGETALL", store_key_routes(key), NULL);
    if (r == NULL) {
        admin_db_close(&db);
        return 1;
    }
    n = store_reply_count(r) / 2;
    v = xcalloc(n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i].domain = xstrdup(store_reply_str(store_reply_at(r, 2 * i), NULL));
        v[i].value =
            xstrdup(store_reply_str(store_reply_at(r, 2 * i + 1), NULL));
    }
    qsort(v, n, sizeof(*v), cmp_route);
    for (size_t i = 0; i < n; i++) {
        char *semi = strchr(v[i].value, ';');

        if (semi)
            *semi = ' ';
        printf("%s %s\n", v[i].domain, v[i].value);
        free(v[i].domain);
        free(v[i].value);
    }
    free(v);
    store_reply_free(&r);
    admin_db_close(&db);
    return 0;
}
