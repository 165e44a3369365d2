#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "xalloc.h"

enum ckind {
    C_STR, C_INT, C_BOOL, C_ADDR, C_ENDPOINTS, C_PATH, C_LEVEL,
    C_ADDR_OPT /* empty (off), or HOST:PORT with port 0 allowed */
};

struct ckey {
    const char *key;
    enum ckind kind;
    const char *def;
    long min, max;
    bool secret;
    const char *help;
};

/* The one list of keys. Defaults are the local profile (DESIGN.md). */
static const struct ckey ckeys[] = {
    {"data", C_PATH, "./var", 0, 0, false, "data folder: mail, redis, tls"},
    {"hostname", C_STR, "", 0, 0, false, "name in greetings (default: host)"},
    {"log.level", C_LEVEL, "info", 0, 0, false, "debug|info|warn|err|fatal"},
    {"redis.host", C_STR, "127.0.0.1", 0, 0, false, "redis host"},
    {"redis.port", C_INT, "6380", 1, 65535, false, "redis port"},
    {"redis.password", C_STR, "", 0, 0, true, "redis AUTH password"},
    {"bus.clients", C_ENDPOINTS, "tcp://127.0.0.1:5570", 0, 0, false,
     "broker endpoints for requests, comma list (fail-over)"},
    {"bus.workers", C_ENDPOINTS, "tcp://127.0.0.1:5571", 0, 0, false,
     "broker endpoints workers register with, comma list"},
    {"bus.trace", C_ENDPOINTS, "tcp://127.0.0.1:5572", 0, 0, false,
     "broker trace feeds, comma list"},
    {"bus.heartbeat_ms", C_INT, "250", 10, 60000, false,
     "heartbeat interval between broker and workers"},
    {"bus.liveness", C_INT, "4", 2, 100, false,
     "missed heartbeats before a peer is taken for dead"},
    {"bus.timeout_ms", C_INT, "5000", 10, 600000, false,
     "default deadline of a request"},
    {"bus.max_envelope", C_INT, "67108864", 1024, 1073741824, false,
     "largest envelope accepted, bytes"},
    {"bus.worker_capacity", C_INT, "64", 1, 100000, false,
     "requests a worker takes at once"},
    {"broker.clients", C_ENDPOINTS, "tcp://127.0.0.1:5570", 0, 0, false,
     "where the broker binds for clients"},
    {"broker.workers", C_ENDPOINTS, "tcp://127.0.0.1:5571", 0, 0, false,
     "where the broker binds for workers"},
    {"broker.trace", C_ENDPOINTS, "tcp://127.0.0.1:5572", 0, 0, false,
     "where the broker binds its trace feed"},
    {"listen.mta", C_ADDR, "127.0.0.1:2525", 0, 0, false, "inbound SMTP"},
    {"listen.msa", C_ADDR, "127.0.0.1:2587", 0, 0, false,
     "submission (STARTTLS)"},
    {"listen.smtps", C_ADDR, "127.0.0.1:2465", 0, 0, false,
     "submission (implicit TLS)"},
    {"listen.imap", C_ADDR_OPT, "127.0.0.1:2143", 0, 0, false,
     "IMAP with STARTTLS (empty: off)"},
    {"listen.imaps", C_ADDR_OPT, "127.0.0.1:2993", 0, 0, false,
     "IMAPS, TLS from the first byte (empty: off)"},
    {"listen.lmtp", C_ADDR_OPT, "127.0.0.1:2424", 0, 0, false,
     "LMTP into the mailbox (empty: off)"},
    {"listener.roles", C_STR, "mta,msa,smtps", 0, 0, false,
     "roles this listener serves: comma list of mta, msa, smtps"},
    {"listener.max_sessions", C_INT, "20000", 1, 1000000, false,
     "sessions one listener process holds at once"},
    {"listener.max_per_ip", C_INT, "50", 1, 1000000, false,
     "sessions at once from one client address"},
    {"listener.idle_timeout_ms", C_INT, "300000", 1000, 3600000, false,
     "idle time before 421 (RFC 5321 4.5.3.2.7: at least 5 minutes)"},
    {"listener.session_timeout_ms", C_INT, "3600000", 1000, 86400000, false,
     "longest a session may last"},
    {"imap.max_sessions", C_INT, "10000", 1, 1000000, false,
     "IMAP sessions one mailbox process holds at once"},
    {"imap.max_per_ip", C_INT, "100", 1, 1000000, false,
     "IMAP sessions at once from one client address"},
    {"imap.idle_timeout_ms", C_INT, "1800000", 1000, 86400000, false,
     "idle time before the autologout BYE (RFC 3501 5.4: at least 30 "
     "minutes; IDLE too, RFC 2177 3)"},
    {"imap.max_append", C_INT, "52428800", 1024, 2147483647, false,
     "largest message APPEND takes, bytes (beyond: NO [TOOBIG])"},
    {"mailbox.shards", C_INT, "1", 0, 1024, false,
     "mailbox services accounts are split over by a stable hash of the "
     "address (lib/shard.h), each registered as mailbox.K; 1: one service, "
     "mailbox, whose copies are interchangeable; 0: one shard per "
     "supervisor.mailbox copy. Every process must see the same value"},
    {"mailbox.shard", C_INT, "-1", -1, 1023, false,
     "this mailbox process's shard K; -1: from its copy number (--instance "
     "N owns shard (N-1) mod mailbox.shards)"},
    {"mailbox.imap_internal", C_ADDR_OPT, "", 0, 0, false,
     "internal IMAP door where copies that do not own an account hand "
     "its logins over (plaintext, tickets only, never passwords); empty: "
     "127.0.0.1 on a port the kernel picks when mailbox.shards > 1. Under "
     "samotopd, copy N gets PORT + N - 1"},
    {"mailbox.imap_advertise", C_STR, "", 0, 0, false,
     "numeric address other mailbox copies reach this one's internal IMAP "
     "door at; empty: the host of mailbox.imap_internal (which must not "
     "then be a wildcard)"},
    {"mailbox.imap_ticket_ms", C_INT, "10000", 100, 600000, false,
     "how long a one-time ticket for the internal IMAP door stays valid"},
    {"lmtp.max_sessions", C_INT, "200", 1, 100000, false,
     "LMTP sessions one mailbox process holds at once"},
    {"lmtp.idle_timeout_ms", C_INT, "300000", 1000, 3600000, false,
     "idle time before an LMTP session gets 421 (RFC 5321 4.5.3.2.7)"},
    {"smtp.max_message", C_INT, "52428800", 1024, 2147483647, false,
     "largest message accepted, bytes (advertised as SIZE)"},
    {"smtp.max_rcpts", C_INT, "1000", 100, 100000, false,
     "recipients per message (RFC 5321 4.5.3.1.8: at least 100)"},
    {"smtp.max_errors", C_INT, "20", 1, 1000, false,
     "bad commands before the session is closed"},
    {"guard.conn_per_minute", C_INT, "600", 0, 100000000, false,
     "connections per client IP and minute; 0: no limit"},
    {"guard.msg_per_minute", C_INT, "1200", 0, 100000000, false,
     "messages (MAIL) per client IP and minute; 0: no limit"},
    {"guard.user_msg_per_minute", C_INT, "100", 0, 100000000, false,
     "messages per authenticated user and minute; 0: no limit"},
    {"guard.user_rcpt_per_minute", C_INT, "1000", 0, 100000000, false,
     "recipients per authenticated user and minute; 0: no limit"},
    {"guard.rate_flush_ms", C_INT, "100", 10, 60000, false,
     "rate counts go to Redis (shared by guard copies) this often"},
    {"guard.postmaster", C_STR, "", 0, 0, false,
     "where mail to Postmaster (no domain), and to postmaster@ one of our "
     "domains without that account or alias, goes (RFC 5321 4.5.1)"},
    {"auth.threads", C_INT, "2", 1, 64, false,
     "threads running password checks (scrypt: 32 MiB each)"},
    {"auth.queue", C_INT, "64", 1, 100000, false,
     "password checks waiting for a thread; beyond: 454 4.7.0"},
    {"auth.fail_limit", C_INT, "5", 0, 1000000, false,
     "failed logins per account, and per client IP, before 454; 0: none"},
    {"auth.fail_window_s", C_INT, "300", 1, 86400, false,
     "failures are forgotten after this long without another"},
    {"auth.fail_delay_ms", C_INT, "200", 0, 60000, false,
     "delay before a 535, times the failures counted"},
    {"auth.fail_delay_max_ms", C_INT, "5000", 0, 600000, false,
     "longest delay before a 535"},
    {"auth.cache_ttl_s", C_INT, "300", 0, 86400, false,
     "a verified login is remembered this long (no scrypt); 0: no cache"},
    {"auth.cache_size", C_INT, "10000", 1, 10000000, false,
     "verified logins remembered at most (least recently used go)"},
    {"queue.scan_ms", C_INT, "200", 10, 60000, false,
     "how often the queue looks for messages due"},
    {"queue.lease_ms", C_INT, "60000", 500, 3600000, false,
     "a claimed message's lease; renewed while it is worked on"},
    {"queue.max_inflight", C_INT, "20", 1, 10000, false,
     "messages one queue process works on at once"},
    {"queue.retry_min_s", C_INT, "60", 1, 86400, false,
     "first retry delay after a temporary failure (then doubling)"},
    {"queue.retry_max_s", C_INT, "3600", 1, 604800, false,
     "longest retry delay"},
    {"queue.lifetime_s", C_INT, "432000", 1, 31536000, false,
     "time in the queue before a message bounces with 4.4.7"},
    {"queue.delay_warn_s", C_INT, "14400", 0, 31536000, false,
     "retrying this long sends a 'delayed' DSN (NOTIFY=DELAY); 0: never"},
    {"queue.mailbox_timeout_ms", C_INT, "60000", 100, 3600000, false,
     "deadline of a mailbox.deliver call"},
    {"queue.relay_timeout_ms", C_INT, "600000", 100, 3600000, false,
     "deadline of a relay.send call"},
    {"queue.dsn_full_max", C_INT, "65536", 0, 2147483647, false,
     "largest message a bounce returns whole when RET is not given"},
    {"relay.dns", C_STR, "", 0, 0, false,
     "DNS servers for MX lookups: comma list of IP:PORT; empty: "
     "/etc/resolv.conf"},
    {"relay.dns_timeout_ms", C_INT, "5000", 10, 60000, false,
     "first DNS try's timeout (doubled each round)"},
    {"relay.dns_tries", C_INT, "2", 1, 10, false,
     "DNS rounds over the servers before a lookup fails (4.4.3)"},
    {"relay.port", C_INT, "25", 1, 65535, false,
     "port of MX hosts (and of routes that give none)"},
    {"relay.idle_ms", C_INT, "5000", 0, 600000, false,
     "an idle connection is kept this long for the next message; 0: not"},
    {"relay.max_per_host", C_INT, "10", 1, 10000, false,
     "connections at once to one next-hop address; more messages wait"},
    {"relay.connect_timeout_ms", C_INT, "30000", 10, 600000, false,
     "TCP connect and TLS handshake to a next hop"},
    {"relay.timeout_greeting_ms", C_INT, "300000", 10, 3600000, false,
     "wait for the 220 greeting (RFC 5321 4.5.3.2.1: 5 minutes)"},
    {"relay.timeout_cmd_ms", C_INT, "300000", 10, 3600000, false,
     "wait for replies to EHLO, STARTTLS, RSET, MAIL, RCPT, QUIT "
     "(4.5.3.2.2-3: 5 minutes)"},
    {"relay.timeout_data_init_ms", C_INT, "120000", 10, 3600000, false,
     "wait for the 354 to DATA (4.5.3.2.4: 2 minutes)"},
    {"relay.timeout_data_block_ms", C_INT, "180000", 10, 3600000, false,
     "wait to send each block of data (4.5.3.2.5: 3 minutes)"},
    {"relay.timeout_data_end_ms", C_INT, "600000", 10, 3600000, false,
     "wait for the reply to the end of data (4.5.3.2.6: 10 minutes)"},
    {"relay.tls_ca", C_PATH, "", 0, 0, false,
     "CA bundle for routes with tls=verify; empty: the system's"},
    {"tls.cert", C_PATH, "", 0, 0, false,
     "certificate chain (PEM); empty: self-signed in data/tls"},
    {"tls.key", C_PATH, "", 0, 0, false, "private key (PEM)"},
    {"metrics.listen", C_ADDR_OPT, "", 0, 0, false,
     "HTTP /metrics, /health, /ready at HOST:PORT (0: any port, logged); "
     "empty: off; under samotopd the base of a port block (README)"},
    {"metrics.sample_ms", C_INT, "5000", 100, 3600000, false,
     "how often gauges read from Redis (queue depth, age) are sampled"},
    {"supervisor.redis", C_BOOL, "yes", 0, 0, false,
     "start a redis-server for the local profile"},
    {"supervisor.redis_server", C_STR, "redis-server", 0, 0, false,
     "redis-server executable"},
    {"supervisor.bin", C_PATH, "", 0, 0, false,
     "folder of the actor executables (default: samotopd's own)"},
    {"supervisor.bus", C_INT, "1", 0, 16, false, "broker processes"},
    {"supervisor.listener", C_INT, "1", 0, 256, false, "listener copies"},
    {"supervisor.auth", C_INT, "1", 0, 256, false, "auth copies"},
    {"supervisor.guard", C_INT, "1", 0, 256, false, "guard copies"},
    {"supervisor.mailbox", C_INT, "1", 0, 256, false, "mailbox copies"},
    {"supervisor.queue", C_INT, "1", 0, 256, false, "queue copies"},
    {"supervisor.relay", C_INT, "1", 0, 256, false, "relay copies"},
    {"supervisor.backoff_min_ms", C_INT, "200", 10, 600000, false,
     "first restart delay"},
    {"supervisor.backoff_max_ms", C_INT, "30000", 10, 3600000, false,
     "longest restart delay"},
    {"supervisor.stop_timeout_ms", C_INT, "10000", 100, 600000, false,
     "grace before SIGKILL at stop"},
};

#define NKEYS (sizeof(ckeys) / sizeof(ckeys[0]))

struct config {
    char *val[NKEYS];
};

static int
ckey_find(const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(ckeys[i].key, key) == 0)
            return (int)i;
    return -1;
}

config_t *
config_new(void)
{
    config_t *cfg = xcalloc(1, sizeof(*cfg));

    for (size_t i = 0; i < NKEYS; i++)
        cfg->val[i] = xstrdup(ckeys[i].def);
    return cfg;
}

void
config_destroy(config_t **cfg_p)
{
    config_t *cfg = *cfg_p;

    if (cfg == NULL)
        return;
    for (size_t i = 0; i < NKEYS; i++)
        free(cfg->val[i]);
    free(cfg);
    *cfg_p = NULL;
}

int
config_split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon, *h = addr;
    size_t hl;
    char *end;
    long p;

    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');

        if (rb == NULL || rb[1] != ':')
            return ERR_INVAL;
        h = addr + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return ERR_INVAL;
        hl = (size_t)(colon - addr);
    }
    if (hl == 0 || hl >= hostlen)
        return ERR_INVAL;
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || *end || colon[1] == '\0' || p < 1 || p > 65535)
        return ERR_INVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static int
check_endpoint(const char *ep, char *why, size_t whylen)
{
    char host[256];
    int port;

    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0) {
        if (strstr(ep, "://")[3] != '\0')
            return 0;
        snprintf(why, whylen, "endpoint \"%s\" has no address", ep);
        return ERR_CONFIG;
    }
    if (strncmp(ep, "tcp://", 6) != 0) {
        snprintf(why, whylen, "endpoint \"%s\" is not tcp://, ipc:// or "
                 "inproc://", ep);
        return ERR_CONFIG;
    }
    if (config_split_addr(ep + 6, host, sizeof(host), &port) != 0) {
        snprintf(why, whylen, "endpoint \"%s\" is not tcp://HOST:PORT", ep);
        return ERR_CONFIG;
    }
    return 0;
}

static int
check_value(const struct ckey *k, const char *v, char *why, size_t whylen)
{
    char host[256], *end;
    int port;
    long n;

    switch (k->kind) {
    case C_STR:
    case C_PATH:
        for (const char *p = v; *p; p++)
            if ((unsigned char)*p < ' ') {
                snprintf(why, whylen, "control character in value");
                return ERR_CONFIG;
            }
        return 0;
    case C_INT:
        errno = 0;
        n = strtol(v, &end, 10);
        if (errno || *v == '\0' || *end) {
            snprintf(why, whylen, "\"%s\" is not an integer", v);
            return ERR_CONFIG;
        }
        if (n < k->min || n > k->max) {
            snprintf(why, whylen, "%ld is outside %ld..%ld", n, k->min,
                     k->max);
            return ERR_CONFIG;
        }
        return 0;
    case C_BOOL:
        if (strcmp(v, "yes") && strcmp(v, "no") && strcmp(v, "true") &&
            strcmp(v, "false") && strcmp(v, "1") && strcmp(v, "0")) {
            snprintf(why, whylen, "\"%s\" is not yes/no/true/false/1/0", v);
            return ERR_CONFIG;
        }
        return 0;
    case C_ADDR:
        if (config_split_addr(v, host, sizeof(host), &port) != 0) {
            snprintf(why, whylen, "\"%s\" is not HOST:PORT with a port in "
                     "1..65535", v);
            return ERR_CONFIG;
        }
        return 0;
    case C_ADDR_OPT: {
        size_t vl = strlen(v);
        char tmp[300];

        if (vl == 0)
            return 0;
        /* Port 0 asks the kernel for a free port: check it as port 1. */
        snprintf(tmp, sizeof(tmp), "%s", v);
        if (vl >= 2 && vl < sizeof(tmp) && strcmp(v + vl - 2, ":0") == 0)
            tmp[vl - 1] = '1';
        if (vl >= sizeof(tmp) ||
            config_split_addr(tmp, host, sizeof(host), &port) != 0) {
            snprintf(why, whylen, "\"%s\" is not empty or HOST:PORT with a "
                     "port in 0..65535", v);
            return ERR_CONFIG;
        }
        return 0;
    }
    case C_LEVEL:
        if (strcmp(v, "debug") && strcmp(v, "info") && strcmp(v, "warn") &&
            strcmp(v, "err") && strcmp(v, "fatal")) {
            snprintf(why, whylen, "\"%s\" is not debug|info|warn|err|fatal",
                     v);
            return ERR_CONFIG;
        }
        return 0;
    case C_ENDPOINTS: {
        char **items;
        int cnt = config_list(v, &items), rc = 0;

        if (cnt == 0) {
            snprintf(why, whylen, "no endpoint given");
            rc = ERR_CONFIG;
        }
        for (int i = 0; i < cnt && rc == 0; i++)
            if (check_endpoint(items[i], why, whylen) != 0) {
                if (!*why)
                    snprintf(why, whylen, "bad endpoint \"%s\"", items[i]);
                rc = ERR_CONFIG;
            }
        config_list_free(&items, cnt);
        return rc;
    }
    }
    return 0;
}

int
config_set(config_t *cfg, const char *key, const char *value, char *why,
           size_t whylen)
{
    char reason[400] = "";
    int i = ckey_find(key);

    if (i < 0) {
        snprintf(why, whylen, "%s: unknown key", key);
        return ERR_CONFIG;
    }
    if (check_value(&ckeys[i], value, reason, sizeof(reason)) != 0) {
        snprintf(why, whylen, "%s: %s", key, reason);
        return ERR_CONFIG;
    }
    free(cfg->val[i]);
    cfg->val[i] = xstrdup(value);
    return 0;
}

static char *
trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int
load_file(config_t *cfg, const char *path, char *why, size_t whylen)
{
    char line[4096], section[128] = "", key[300], reason[512];
    FILE *f = fopen(path, "r");
    int lineno = 0, rc = 0;

    if (f == NULL) {
        snprintf(why, whylen, "%s: cannot open: %s", path, strerror(errno));
        return ERR_CONFIG;
    }
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        char *s, *eq, *k, *v;
        size_t vl;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(why, whylen, "%s:%d: line too long", path, lineno);
            rc = ERR_CONFIG;
            break;
        }
        s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *rb = strchr(s, ']');

            if (rb == NULL || rb[1] != '\0' || rb - s - 1 >= 120) {
                snprintf(why, whylen, "%s:%d: bad section header", path,
                         lineno);
                rc = ERR_CONFIG;
                break;
            }
            *rb = '\0';
            snprintf(section, sizeof(section), "%s", trim(s + 1));
            continue;
        }
        eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(why, whylen, "%s:%d: expected key = value", path,
                     lineno);
            rc = ERR_CONFIG;
            break;
        }
        *eq = '\0';
        k = trim(s);
        v = trim(eq + 1);
        vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = '\0';
            v++;
        }
        if (*section)
            snprintf(key, sizeof(key), "%s.%s", section, k);
        else
            snprintf(key, sizeof(key), "%s", k);
        if (config_set(cfg, key, v, reason, sizeof(reason)) != 0) {
            snprintf(why, whylen, "%s:%d: %s", path, lineno, reason);
            rc = ERR_CONFIG;
        }
    }
    fclose(f);
    return rc;
}

const char *
config_env_name(const char *key)
{
    static char buf[160];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "SAMOTOP_");

    for (const char *p = key; *p && n < sizeof(buf) - 1; p++)
        buf[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    buf[n] = '\0';
    return buf;
}

int
config_load(config_t *cfg, const char *path, char *why, size_t whylen)
{
    char reason[512];

    if (path == NULL || *path == '\0')
        path = getenv("SAMOTOP_CONFIG");
    if (path && *path && load_file(cfg, path, why, whylen) != 0)
        return ERR_CONFIG;
    for (size_t i = 0; i < NKEYS; i++) {
        const char *env = config_env_name(ckeys[i].key);
        const char *v = getenv(env);

        if (v == NULL)
            continue;
        if (config_set(cfg, ckeys[i].key, v, reason, sizeof(reason)) != 0) {
            snprintf(why, whylen, "%s (from %s)", reason,
                     config_env_name(ckeys[i].key));
            return ERR_CONFIG;
        }
    }
    return 0;
}

/* Whether the section "name" (len bytes, lower case) is the section of
 * some declared key, the part before its first dot. */
static bool
is_section(const char *name, size_t len)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const char *dot = strchr(ckeys[i].key, '.');

        if (dot && (size_t)(dot - ckeys[i].key) == len &&
            strncmp(ckeys[i].key, name, len) == 0)
            return true;
    }
    return false;
}

size_t
config_env_unknown(char *const *envp, char *out, size_t outlen)
{
    extern char **environ;
    size_t count = 0, used = 0;

    if (outlen > 0)
        out[0] = '\0';
    for (char *const *e = envp ? envp : environ; e && *e; e++) {
        const char *name = *e, *eq = strchr(name, '='), *sec, *us;
        char lower[32], envname[160];
        size_t nlen, slen;
        bool known = false;

        if (eq == NULL || strncmp(name, "SAMOTOP_", 8) != 0)
            continue;
        nlen = (size_t)(eq - name);
        sec = name + 8;
        us = memchr(sec, '_', nlen - 8);
        if (us == NULL || (slen = (size_t)(us - sec)) >= sizeof(lower) ||
            nlen >= sizeof(envname))
            continue;
        for (size_t k = 0; k < slen; k++)
            lower[k] = (char)tolower((unsigned char)sec[k]);
        if (!is_section(lower, slen))
            continue;
        memcpy(envname, name, nlen);
        envname[nlen] = '\0';
        for (size_t i = 0; i < NKEYS && !known; i++)
            known = strcmp(config_env_name(ckeys[i].key), envname) == 0;
        if (known)
            continue;
        if (outlen > used + 1) {
            int n = snprintf(out + used, outlen - used, "%s%s",
                             count ? " " : "", envname);

            used = n < 0 ? used : used + (size_t)n;
            if (used >= outlen)
                used = outlen - 1;
        }
        count++;
    }
    return count;
}

void
config_warn_env_unknown(void)
{
    char names[512];

    if (config_env_unknown(NULL, names, sizeof(names)) > 0)
        log_warn(NULL, "config_env_unknown",
                 "names=%s reason=\"not a configuration key, ignored "
                 "(--print-config lists the keys)\"",
                 log_q(names));
}

static int
must_find(const char *key)
{
    int i = ckey_find(key);

    if (i < 0) {
        fprintf(stderr, "level=fatal event=bug reason=\"undeclared config "
                "key %s\"\n", key);
        abort();
    }
    return i;
}

const char *
config_str(const config_t *cfg, const char *key)
{
    return cfg->val[must_find(key)];
}

long
config_int(const config_t *cfg, const char *key)
{
    return strtol(cfg->val[must_find(key)], NULL, 10);
}

bool
config_bool(const config_t *cfg, const char *key)
{
    const char *v = cfg->val[must_find(key)];

    return strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 ||
           strcmp(v, "1") == 0;
}

void
config_dump(const config_t *cfg, void *file)
{
    FILE *f = file;

    for (size_t i = 0; i < NKEYS; i++)
        fprintf(f, "%s = %s\t# %s; %s\n", ckeys[i].key,
                ckeys[i].secret && *cfg->val[i] ? "***" : cfg->val[i],
                config_env_name(ckeys[i].key), ckeys[i].help);
}

int
config_list(const char *value, char ***items_out)
{
    char *copy = xstrdup(value), *save = NULL, *tok;
    char **items = NULL;
    int n = 0;

    for (tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok);

        if (*t == '\0')
            continue;
        items = xrealloc(items, sizeof(*items) * (size_t)(n + 1));
        items[n++] = xstrdup(t);
    }
    free(copy);
    *items_out = items;
    return n;
}

void
config_list_free(char ***items_p, int n)
{
    char **items = *items_p;

    if (items == NULL)
        return;
    for (int i = 0; i < n; i++)
        free(items[i]);
    free(items);
    *items_p = NULL;
}
