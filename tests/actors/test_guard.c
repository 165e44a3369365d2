/*
 * test_guard.c - samotop-guard: its resolver alone (driven from tables in
 * memory), then the real actor between a real redis-server, a real broker
 * (samotop-bus) and a bus client, over TCP on loopback.
 *
 * Redis is filled with keys exactly as schemas/redis.md lays them out,
 * through bus/store.h, the way samotop-admin writes them. Ports
 * 18700-18799 belong to this suite: one block of ten per world (redis on
 * the first port, the broker on the next three): 18700 policy, 18710
 * rate, 18720 to 18740 the outages, 18750 and 18760 two guards sharing one
 * Redis, 18770 rate limits while Redis is down.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "actors/guard/guard.h"
#include "bus.h"
#include "lib/config.h"
#include "lib/err.h"
#include "store.h"
#include "store_keys.h"
#include "tests/testlib.h"

/* ---------------------------------------------------------------------
 * The resolver alone: a lookup table in memory answers its questions.
 */

struct fake_domain {
    const char *name;
    bool disabled;
    const char *catchall;
};

struct fake_local {
    const char *addr;    /* local@domain, lower case */
    int account;         /* 1 account, 2 disabled account, 0 none */
    const char *targets; /* alias targets, comma-separated */
};

static const struct fake_domain fake_domains[] = {
    {"example.test", false, NULL},
    {"other.test", false, ""},
    {"catchall.test", false, "boss@catchall.test"},
    {"loopy.test", false, "ghost@loopy.test"},
    {"off.test", true, NULL},
    {"xn--bcher-kva.test", false, NULL}, /* "bücher.test" */
    {NULL, false, NULL},
};

static const struct fake_local fake_locals[] = {
    {"alice@example.test", 1, NULL},
    {"anna@xn--bcher-kva.test", 1, NULL},
    {"bob@example.test", 1, NULL},
    {"carol@example.test", 2, NULL},
    {"team@example.test", 0,
     "alice@example.test,Bob@Example.Test,friend@remote.test,"
     "ALICE@example.test"},
    {"chain1@example.test", 0, "chain2@example.test"},
    {"chain2@example.test", 0, "bob@example.test"},
    {"loopa@example.test", 0, "loopb@example.test"},
    {"loopb@example.test", 0, "loopa@example.test"},
    {"mixed@example.test", 0,
     "alice@example.test,nobody@example.test,carol@example.test"},
    {"dead@example.test", 0, "nobody@example.test,carol@example.test"},
    {"junk@example.test", 0, "not an address,alice@example.test"},
    {"diamond@example.test", 0, "left@example.test,right@example.test"},
    {"left@example.test", 0, "alice@example.test"},
    {"right@example.test", 0, "alice@example.test"},
    /* s is reached first at depth 1 (fine), then at depth 7 through the
     * x chain, where its own two hops make the path too deep. */
    {"r1@example.test", 0, "s@example.test,x1@example.test"},
    {"r2@example.test", 0, "x1@example.test,s@example.test"},
    {"s@example.test", 0, "t@example.test"},
    {"t@example.test", 0, "alice@example.test"},
    {"x1@example.test", 0, "x2@example.test"},
    {"x2@example.test", 0, "x3@example.test"},
    {"x3@example.test", 0, "x4@example.test"},
    {"x4@example.test", 0, "x5@example.test"},
    {"x5@example.test", 0, "x6@example.test"},
    {"x6@example.test", 0, "s@example.test"},
    {"boss@catchall.test", 1, NULL},
    {"sales@other.test", 0, "alice@example.test"},
    {"postmaster@other.test", 0, "alice@example.test"},
    {NULL, 0, NULL},
};

/* Aliases made in code: a chain of n hops ending at alice. */
static char *
fake_chain_target(const char *addr)
{
    int n, i;
    char *at;

    /* "hopN.I@example.test": hop I of a chain of N. */
    if (sscanf(addr, "hop%d.%d@", &n, &i) != 2 ||
        (at = strchr(addr, '@')) == NULL || strcmp(at, "@example.test") != 0)
        return NULL;
    if (i >= n)
        return strdup("alice@example.test");
    char *t = malloc(64);

    snprintf(t, 64, "hop%d.%d@example.test", n, i + 1);
    return t;
}

struct fake_answer {
    char *v[400];
    size_t n;
};

static void
fake_split(const char *list, struct fake_answer *out)
{
    char *copy = strdup(list), *save = NULL;

    out->n = 0;
    for (char *t = strtok_r(copy, ",", &save); t && out->n < 400;
         t = strtok_r(NULL, ",", &save))
        out->v[out->n++] = strdup(t);
    free(copy);
}

static void
fake_free(struct fake_answer *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    a->n = 0;
}

static void
fake_answer_local(guard_resolve_t *r, const struct guard_query *q)
{
    char addr[700];
    struct guard_local_info li = {0};
    struct fake_answer a = {.n = 0};
    char *chain;

    snprintf(addr, sizeof(addr), "%s@%s", q->local, q->domain);
    if (strcmp(addr, "wide@example.test") == 0) {
        /* More targets than one recipient may expand to. */
        for (a.n = 0; a.n < GUARD_MAX_NODES + 10; a.n++) {
            a.v[a.n] = malloc(48);
            snprintf(a.v[a.n], 48, "w%zu@remote.test", a.n);
        }
    } else if ((chain = fake_chain_target(addr)) != NULL) {
        a.v[a.n++] = chain;
    } else {
        for (const struct fake_local *l = fake_locals; l->addr; l++) {
            if (strcmp(l->addr, addr) != 0)
                continue;
            li.account = l->account != 0;
            li.disabled = l->account == 2;
            if (l->targets)
                fake_split(l->targets, &a);
        }
    }
    li.targets = (const char *const *)a.v;
    li.ntargets = a.n;
    guard_resolve_local_answer(r, &li);
    fake_free(&a);
}

static void
fake_answer_domain(guard_resolve_t *r, const struct guard_query *q)
{
    struct guard_domain_info di = {0};

    for (const struct fake_domain *d = fake_domains; d->name; d++)
        if (strcmp(d->name, q->domain) == 0) {
            di.ours = true;
            di.disabled = d->disabled;
            di.catchall = d->catchall;
        }
    guard_resolve_domain_answer(r, &di);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The strings sorted and joined with commas, into out. */
static void
join_sorted(const char *const *v, size_t n, char *out, size_t outlen)
{
    const char **s = malloc((n ? n : 1) * sizeof(*s));
    size_t o = 0;

    if (n > 0) { /* v may be NULL when empty */
        memcpy(s, v, n * sizeof(*s));
        qsort(s, n, sizeof(*s), cmp_str);
    }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? "," : "", s[i]);
    free(s);
}

struct resolve_row {
    const char *label;
    const char *addr;
    int flags;
    int code;
    const char *ecode;
    const char *rcpt;      /* normalised; NULL: not checked */
    const char *mailboxes; /* sorted, comma-joined */
    const char *forward;
};

static const struct resolve_row resolve_rows[] = {
    /* RFC 6531 3.2: a domain in U-labels is the domain its A-labels name
     * (lib/idna.h); ours are stored as A-labels. */
    {"U-label domain of ours",
     "anna@B\xc3\x9c"
     "cher.test",
     0, 250, "2.1.5", "anna@xn--bcher-kva.test", "anna@xn--bcher-kva.test", ""},
    {"A-label domain of ours", "ANNA@xn--BCHER-kva.test", 0, 250, "2.1.5",
     "anna@xn--bcher-kva.test", "anna@xn--bcher-kva.test", ""},
    {"U-label domain elsewhere", "x@m\xc3\xbcnchen.test", 0, 554, "5.7.1", NULL,
     NULL, NULL},
    {"U-label domain elsewhere, relayed as A-labels", "x@m\xc3\xbcnchen.test",
     GUARD_RELAY, 250, "2.1.5", "x@xn--mnchen-3ya.test", "",
     "x@xn--mnchen-3ya.test"},
    {"invalid IDNA name", "x@a\xe2\x98\x83\xef\xbf\xbf.test", GUARD_RELAY, 501,
     "5.1.3", NULL, NULL, NULL},
    /* RFC 5321 4.5.1: postmaster is taken at every domain we serve, and
     * <Postmaster> without a domain (4.1.1.3); guard.postmaster is bob. */
    {"<Postmaster>", "Postmaster", 0, 250, "2.1.5", "postmaster",
     "bob@example.test", ""},
    {"<Postmaster>, any case", "<POSTMASTER>", 0, 250, "2.1.5", "postmaster",
     "bob@example.test", ""},
    {"postmaster@ ours, none there", "PostMaster@example.test", 0, 250, "2.1.5",
     "postmaster@example.test", "bob@example.test", ""},
    {"postmaster@ ours, an alias there", "postmaster@other.test", 0, 250,
     "2.1.5", "postmaster@other.test", "alice@example.test", ""},
    {"postmaster@ a catch-all domain", "postmaster@catchall.test", 0, 250,
     "2.1.5", NULL, "boss@catchall.test", ""},
    {"postmaster@ a disabled domain", "postmaster@off.test", 0, 550, "5.2.1",
     NULL, NULL, NULL},
    {"postmaster@ elsewhere", "postmaster@evil.test", 0, 554, "5.7.1", NULL,
     NULL, NULL},
    {"postmaster@ ours as a sender", "postmaster@example.test",
     GUARD_RELAY | GUARD_NO_CATCHALL, 550, "5.1.1", NULL, NULL, NULL},
    {"account", "alice@example.test", 0, 250, "2.1.5", "alice@example.test",
     "alice@example.test", ""},
    {"account, any case", "ALICE@Example.TEST", 0, 250, "2.1.5",
     "alice@example.test", "alice@example.test", ""},
    {"disabled account", "carol@example.test", 0, 550, "5.2.1", NULL, NULL,
     NULL},
    {"alias to several", "team@example.test", 0, 250, "2.1.5",
     "team@example.test", "alice@example.test,bob@example.test",
     "friend@remote.test"},
    {"alias chain", "chain1@example.test", 0, 250, "2.1.5", NULL,
     "bob@example.test", ""},
    {"alias loop", "loopa@example.test", 0, 550, "5.4.6", NULL, NULL, NULL},
    {"chain of 8 hops", "hop8.1@example.test", 0, 250, "2.1.5", NULL,
     "alice@example.test", ""},
    {"chain of 9 hops", "hop9.1@example.test", 0, 550, "5.4.6", NULL, NULL,
     NULL},
    {"shared target is no loop", "diamond@example.test", 0, 250, "2.1.5", NULL,
     "alice@example.test", ""},
    {"too deep, shallow path first", "r1@example.test", 0, 550, "5.4.6", NULL,
     NULL, NULL},
    {"too deep, deep path first", "r2@example.test", 0, 550, "5.4.6", NULL,
     NULL, NULL},
    {"too wide", "wide@example.test", 0, 550, "5.4.6", NULL, NULL, NULL},
    {"bad targets skipped", "mixed@example.test", 0, 250, "2.1.5", NULL,
     "alice@example.test", ""},
    {"unparsable target skipped", "junk@example.test", 0, 250, "2.1.5", NULL,
     "alice@example.test", ""},
    {"no target left", "dead@example.test", 0, 550, "5.1.1", NULL, NULL, NULL},
    {"plus to account", "Alice+News@example.test", 0, 250, "2.1.5",
     "alice+news@example.test", "alice@example.test", ""},
    {"plus to alias", "team+x@example.test", 0, 250, "2.1.5", NULL,
     "alice@example.test,bob@example.test", "friend@remote.test"},
    {"plus, unknown base", "nobody+x@example.test", 0, 550, "5.1.1", NULL, NULL,
     NULL},
    {"plus, empty base", "+x@example.test", 0, 550, "5.1.1", NULL, NULL, NULL},
    {"catch-all", "whoever@catchall.test", 0, 250, "2.1.5",
     "whoever@catchall.test", "boss@catchall.test", ""},
    {"catch-all off for senders", "whoever@catchall.test", GUARD_NO_CATCHALL,
     550, "5.1.1", NULL, NULL, NULL},
    {"catch-all that loops", "whoever@loopy.test", 0, 550, "5.4.6", NULL, NULL,
     NULL},
    {"empty catch-all", "nobody@other.test", 0, 550, "5.1.1", NULL, NULL, NULL},
    {"alias into another domain", "sales@other.test", 0, 250, "2.1.5", NULL,
     "alice@example.test", ""},
    {"unknown user", "nobody@example.test", 0, 550, "5.1.1", NULL, NULL, NULL},
    {"disabled domain", "alice@off.test", 0, 550, "5.2.1", NULL, NULL, NULL},
    {"foreign domain", "bob@evil.test", 0, 554, "5.7.1", NULL, NULL, NULL},
    {"foreign domain, relay allowed", "Bob@Evil.Test", GUARD_RELAY, 250,
     "2.1.5", "Bob@evil.test", "", "Bob@evil.test"},
    {"percent hack", "alice%evil.test@example.test", 0, 550, "5.1.1", NULL,
     NULL, NULL},
    {"bang path", "evil.test!alice@example.test", 0, 550, "5.1.1", NULL, NULL,
     NULL},
    {"quoted at sign", "\"alice@evil.test\"@example.test", 0, 550, "5.1.1",
     NULL, NULL, NULL},
    {"quoted, same as bare", "\"alice\"@example.test", 0, 250, "2.1.5",
     "alice@example.test", "alice@example.test", ""},
    {"address literal", "alice@[127.0.0.1]", 0, 554, "5.7.1", NULL, NULL, NULL},
    {"source route", "@example.test:bob@evil.test", 0, 554, "5.7.1", NULL, NULL,
     NULL},
    {"our name as a prefix", "alice@example.test.evil.test", 0, 554, "5.7.1",
     NULL, NULL, NULL},
    {"our name as a suffix", "alice@badexample.test", 0, 554, "5.7.1", NULL,
     NULL, NULL},
    {"no domain", "alice", 0, 501, "5.1.3", NULL, NULL, NULL},
    {"two at signs", "alice@evil.test@example.test", 0, 501, "5.1.3", NULL,
     NULL, NULL},
};

/* Resolves addr from the tables; with prefetch, a domain question is
 * answered with its local part's facts too, as the actor does in one
 * round. Caller owns the result. */
/* guard.postmaster for the resolvers below; a test may change it (Check
 * runs each test in a process of its own). */
static const char *the_postmaster = "bob@example.test";

static guard_resolve_t *
run_resolver(const char *label, const char *addr, int flags, bool prefetch)
{
    guard_resolve_t *r = guard_resolve_new(addr, flags, the_postmaster, "t");
    struct guard_query q;
    enum guard_query_kind k;
    int steps = 0;

    while ((k = guard_resolve_step(r, &q)) != GUARD_Q_DONE) {
        ck_assert_msg(++steps < 1000, "%s: does not end", label);
        if (k == GUARD_Q_DOMAIN) {
            fake_answer_domain(r, &q);
            if (prefetch) {
                ck_assert_msg(q.local != NULL, "%s: domain %s without local",
                              label, q.domain);
                fake_answer_local(r, &q);
            }
        } else {
            fake_answer_local(r, &q);
        }
    }
    ck_assert_int_eq(guard_resolve_queries(r), steps);
    return r;
}

/* Checks row's verdict; returns the questions asked (the rounds). */
static int
resolve_row(const struct resolve_row *row, bool prefetch)
{
    guard_resolve_t *r =
        run_resolver(row->label, row->addr, row->flags, prefetch);
    const struct guard_verdict *v;
    char got[4096];
    int queries;

    v = guard_resolve_verdict(r);
    ck_assert_msg(v->code == row->code && strcmp(v->ecode, row->ecode) == 0,
                  "%s: got %d %s (%s), want %d %s", row->label, v->code,
                  v->ecode, v->text, row->code, row->ecode);
    if (row->rcpt)
        ck_assert_msg(strcmp(v->rcpt, row->rcpt) == 0,
                      "%s: rcpt got %s, want %s", row->label, v->rcpt,
                      row->rcpt);
    if (row->mailboxes) {
        join_sorted(v->mailboxes, v->nmailboxes, got, sizeof(got));
        ck_assert_msg(strcmp(got, row->mailboxes) == 0,
                      "%s: mailboxes got \"%s\", want \"%s\"", row->label, got,
                      row->mailboxes);
    }
    if (row->forward) {
        join_sorted(v->forward, v->nforward, got, sizeof(got));
        ck_assert_msg(strcmp(got, row->forward) == 0,
                      "%s: forward got \"%s\", want \"%s\"", row->label, got,
                      row->forward);
    }
    queries = guard_resolve_queries(r);
    guard_resolve_destroy(&r);
    ck_assert_ptr_null(r);
    return queries;
}

/* With no guard.postmaster, or one that names the very address asked
 * for, nothing stands in: a plain 550 5.1.1, not a loop or a crash. */
START_TEST(test_resolve_no_postmaster)
{
    static const struct resolve_row rows[] = {
        {"<Postmaster>, none set", "postmaster", 0, 550, "5.1.1", NULL, NULL,
         NULL},
        {"postmaster@, none set", "postmaster@example.test", 0, 550, "5.1.1",
         NULL, NULL, NULL},
    };
    static const struct resolve_row self = {"postmaster is itself",
                                            "postmaster@example.test",
                                            0,
                                            550,
                                            "5.1.1",
                                            NULL,
                                            NULL,
                                            NULL};
    static const struct resolve_row elsewhere = {"<Postmaster> elsewhere",
                                                 "Postmaster",
                                                 0,
                                                 250,
                                                 "2.1.5",
                                                 "postmaster",
                                                 "",
                                                 "pm@remote.test"};

    the_postmaster = NULL;
    resolve_row(&rows[0], false);
    resolve_row(&rows[1], false);
    the_postmaster = "";
    resolve_row(&rows[0], false);
    the_postmaster = "postmaster@example.test";
    resolve_row(&self, false);
    /* A remote postmaster is forwarded, as an alias target would be. */
    the_postmaster = "pm@remote.test";
    resolve_row(&elsewhere, false);
}
END_TEST

START_TEST(test_resolve)
{
    resolve_row(&resolve_rows[_i], false);
}
END_TEST

/* The same verdicts when each domain question brings its local part's
 * facts along, in as many rounds or fewer. */
START_TEST(test_resolve_prefetch)
{
    const struct resolve_row *row = &resolve_rows[_i];
    int apart = resolve_row(row, false), together = resolve_row(row, true);

    ck_assert_msg(together <= apart, "%s: %d rounds with prefetch, %d without",
                  row->label, together, apart);
}
END_TEST

struct rounds_row {
    const char *addr;
    int apart, together;
};

/* Rounds to Redis, each domain then its local part, or both at once. */
static const struct rounds_row rounds_rows[] = {
    {"alice@example.test", 2, 1},   {"nobody@example.test", 2, 1},
    {"bob@evil.test", 1, 1},        {"alice@off.test", 1, 1},
    {"sales@other.test", 4, 2},     {"team@example.test", 5, 4},
    {"alice+x@example.test", 3, 2},
};

START_TEST(test_resolve_rounds)
{
    const struct rounds_row *row = &rounds_rows[_i];
    guard_resolve_t *r;
    int apart, together;

    /* Verdicts are checked above; here only the count. */
    r = run_resolver(row->addr, row->addr, 0, false);
    apart = guard_resolve_queries(r);
    guard_resolve_destroy(&r);
    r = run_resolver(row->addr, row->addr, 0, true);
    together = guard_resolve_queries(r);
    guard_resolve_destroy(&r);
    ck_assert_msg(apart == row->apart && together == row->together,
                  "%s: got %d and %d rounds, want %d and %d", row->addr, apart,
                  together, row->apart, row->together);
}
END_TEST

/* ---------------------------------------------------------------------
 * The real actor: a world of redis-server, samotop-bus and samotop-guard.
 */

struct world {
    int base;
    pid_t redis, bus, guard;
    char clients[64];
    char env[16][128];
    const char *envp[17];
};

/* Set up once per TCase in the parent; each forked test inherits it. */
static struct world W;

static void
add_domain(store_t *s, const char *d, const char *catchall,
           const char *disabled)
{
    char k[STORE_KEY_MAX];

    test_redis_int(s, "SADD", store_key_domains(k), d, NULL);
    test_redis_int(s, "HSET", store_key_domain(k, d), "created", "1700000000",
                   "catchall", catchall, "disabled", disabled, NULL);
}

static void
add_user(store_t *s, const char *d, const char *l, const char *disabled)
{
    char k[STORE_KEY_MAX];

    test_redis_int(s, "SADD", store_key_users(k, d), l, NULL);
    test_redis_int(s, "HSET", store_key_user(k, d, l), "pw",
                   "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA", "disabled", disabled,
                   "created", "1700000000", NULL);
}

/* An alias with up to four targets (NULL ends the list early). */
static void
add_alias(store_t *s, const char *d, const char *l, const char *t1,
          const char *t2, const char *t3, const char *t4)
{
    char k[STORE_KEY_MAX];

    test_redis_int(s, "SADD", store_key_aliases(k, d), l, NULL);
    test_redis_int(s, "SADD", store_key_alias(k, d, l), t1, t2, t3, t4, NULL);
}

/* The accounts, domains and aliases every world holds. */
static void
redis_fill(int port)
{
    store_t *s = test_redis_connect(port, 5000);
    char l[32], t[64], k[STORE_KEY_MAX];

    test_redis_int(s, "FLUSHALL", NULL);
    add_domain(s, "example.test", "", "0");
    add_domain(s, "other.test", "", "0");
    add_domain(s, "catchall.test", "boss@catchall.test", "0");
    add_domain(s, "off.test", "", "1");
    add_user(s, "example.test", "alice", "0");
    add_user(s, "example.test", "bob", "0");
    add_user(s, "example.test", "carol", "1");
    add_user(s, "example.test", "dave", "0");
    add_user(s, "catchall.test", "boss", "0");
    add_user(s, "off.test", "x", "0");
    add_alias(s, "example.test", "team", "alice@example.test",
              "Bob@Example.Test", "friend@remote.test", "alice@EXAMPLE.test");
    add_alias(s, "example.test", "chain1", "chain2@example.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "chain2", "chain3@example.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "chain3", "dave@example.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "loopa", "loopb@example.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "loopb", "loopa@example.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "selfloop", "SelfLoop@example.test", NULL,
              NULL, NULL);
    add_alias(s, "example.test", "diamond", "left@example.test",
              "right@example.test", NULL, NULL);
    add_alias(s, "example.test", "left", "alice@example.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "right", "alice@example.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "fwd", "someone@remote.test", NULL, NULL,
              NULL);
    add_alias(s, "example.test", "mixed", "alice@example.test",
              "nobody@example.test", "carol@example.test", NULL);
    add_alias(s, "example.test", "dead", "nobody@example.test",
              "ghost@example.test", NULL, NULL);
    add_alias(s, "other.test", "sales", "alice@example.test", NULL, NULL, NULL);
    /* Quotas (schemas/redis.md): full is at its quota, roomy has 600 bytes
     * left, alice has none. */
    add_user(s, "example.test", "full", "0");
    add_user(s, "example.test", "roomy", "0");
    test_redis_int(s, "HSET", store_key_user(k, "example.test", "full"),
                   "quota", "1000", NULL);
    test_redis_int(s, "HSET", store_key_user(k, "example.test", "roomy"),
                   "quota", "1000", NULL);
    test_redis_int(s, "HSET", store_key_usage(k, "example.test"), "full",
                   "1000", "roomy", "400", "alice", "99999999", NULL);
    add_alias(s, "example.test", "fullteam", "alice@example.test",
              "full@example.test", NULL, NULL);
    /* ok1 .. ok8 -> alice: eight hops, the most allowed; deep1 .. deep9 ->
     * alice: nine, one too many. */
    for (int i = 1; i <= 8; i++) {
        snprintf(l, sizeof(l), "ok%d", i);
        if (i < 8)
            snprintf(t, sizeof(t), "ok%d@example.test", i + 1);
        else
            snprintf(t, sizeof(t), "alice@example.test");
        add_alias(s, "example.test", l, t, NULL, NULL, NULL);
    }
    for (int i = 1; i <= 9; i++) {
        snprintf(l, sizeof(l), "deep%d", i);
        if (i < 9)
            snprintf(t, sizeof(t), "deep%d@example.test", i + 1);
        else
            snprintf(t, sizeof(t), "alice@example.test");
        add_alias(s, "example.test", l, t, NULL, NULL, NULL);
    }
    store_destroy(&s);
}

/* Starts a world on ports base .. base+3; extra is one more "K=V" for the
 * guard's environment (or NULL). */
static void
world_start(int base, const char *extra1, const char *extra2)
{
    /* test_bin() answers in a static buffer: one path at a time. */
    char bus_path[4096], guard_path[4096];
    const char *bus_argv[] = {bus_path, "--instance", "t", NULL};
    const char *guard_argv[] = {guard_path, "--instance", "g", NULL};
    int n = 0;

    snprintf(bus_path, sizeof(bus_path), "%s", test_bin("samotop-bus"));
    snprintf(guard_path, sizeof(guard_path), "%s", test_bin("samotop-guard"));

    memset(&W, 0, sizeof(W));
    W.base = base;
    snprintf(W.clients, sizeof(W.clients), "tcp://127.0.0.1:%d", base + 1);
    snprintf(W.env[n++], 128, "SAMOTOP_BROKER_CLIENTS=%s", W.clients);
    snprintf(W.env[n++], 128, "SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(W.env[n++], 128, "SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:%d",
             base + 3);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_CLIENTS=%s", W.clients);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_TRACE=tcp://127.0.0.1:%d", base + 3);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_HEARTBEAT_MS=100");
    snprintf(W.env[n++], 128, "SAMOTOP_REDIS_PORT=%d", base);
    if (extra1)
        snprintf(W.env[n++], 128, "%s", extra1);
    if (extra2)
        snprintf(W.env[n++], 128, "%s", extra2);
    for (int i = 0; i < n; i++)
        W.envp[i] = W.env[i];
    W.envp[n] = NULL;
    W.redis = test_redis_start(base);
    redis_fill(base);
    W.bus = test_spawn(bus_argv, W.envp);
    W.guard = test_spawn(guard_argv, W.envp);
}

static void
world_stop(void)
{
    test_stop_clean(&W.guard, "samotop-guard", 5000);
    if (W.bus > 0)
        test_stop(W.bus, SIGTERM, 5000);
    if (W.redis > 0)
        test_stop(W.redis, SIGTERM, 5000);
    memset(&W, 0, sizeof(W));
}

static void
world_rcpt_start(void)
{
    /* 0: no connection limit here, so this world shows it switched off. */
    world_start(18700, "SAMOTOP_GUARD_CONN_PER_MINUTE=0", NULL);
}

static void
world_rate_start(void)
{
    world_start(18710, "SAMOTOP_GUARD_CONN_PER_MINUTE=3",
                "SAMOTOP_GUARD_MSG_PER_MINUTE=2");
}

/* A client of the broker at clients (ports base+1 ..), once the guard
 * guard answers pings there. Another guard answering means another run
 * holds these ports: say so rather than fail later in a puzzling way. */
static bus_client_t *
guard_client(const char *clients, pid_t guard, int base)
{
    char why[256];
    bus_client_t *c = bus_client_new(NULL, clients, 1 << 20, why, sizeof(why));
    int64_t until = test_now_ms() + 10000, pid = 0;

    ck_assert_msg(c != NULL, "bus_client_new: %s", why);
    for (;;) {
        envelope_t *req = envelope_new("guard.ping", NULL, 500), *reply = NULL;

        if (bus_client_call(c, &req, &reply, why, sizeof(why)) == 0) {
            pid = envelope_get_int(reply, ENV_KEY_PID, 0);
            envelope_destroy(&reply);
            if (pid == guard)
                return c;
            snprintf(why, sizeof(why),
                     "guard pid %lld answered, ours is %d: "
                     "is another run using ports %d-%d?",
                     (long long)pid, (int)guard, base, base + 3);
        }
        ck_assert_msg(test_now_ms() < until, "guard never answered: %s", why);
        usleep(50000);
    }
}

/* A client of this world's broker, once this world's guard answers. */
static bus_client_t *
world_client(void)
{
    return guard_client(W.clients, W.guard, W.base);
}

struct req {
    const char *type;
    const char *role;
    const char *user;
    const char *ip;
    const char *mail_from;
    const char *rcpt;
};

/* Sends one guard request, with the SIZE= declared at MAIL when size > 0,
 * and returns its reply (caller frees); *ms gets how long it took when ms
 * is not NULL. */
static envelope_t *
guard_call_sized(bus_client_t *c, const struct req *rq, int64_t size,
                 int64_t *ms)
{
    envelope_t *req = envelope_new(rq->type, NULL, 3000), *reply = NULL;
    value_t *body = envelope_body(req);
    char why[256];
    int64_t t0 = test_now_ms();
    int rc;

    value_set_str(body, ENV_KEY_CLIENT_IP, rq->ip ? rq->ip : "192.0.2.7");
    value_set_str(body, ENV_KEY_ROLE, rq->role ? rq->role : "mta");
    if (strcmp(rq->type, "guard.connect") != 0)
        value_set_str(body, ENV_KEY_MAIL_FROM,
                      rq->mail_from ? rq->mail_from : "");
    if (rq->rcpt)
        value_set_str(body, ENV_KEY_RCPT, rq->rcpt);
    if (rq->user)
        value_set_str(body, ENV_KEY_USER, rq->user);
    if (size > 0)
        value_set_int(body, ENV_KEY_SIZE, size);
    rc = bus_client_call(c, &req, &reply, why, sizeof(why));
    if (ms)
        *ms = test_now_ms() - t0;
    ck_assert_msg(rc == 0, "%s: bus error %s: %s", rq->type, err_name(rc), why);
    return reply;
}

static envelope_t *
guard_call(bus_client_t *c, const struct req *rq, int64_t *ms)
{
    return guard_call_sized(c, rq, 0, ms);
}

/* A reply's string array, sorted and comma-joined, into out. */
static void
reply_list(const envelope_t *reply, const char *key, char *out, size_t outlen)
{
    const value_t *arr = value_get(envelope_body_peek(reply), key);
    const char *v[512];
    size_t n = 0;

    out[0] = '\0';
    if (arr == NULL) {
        snprintf(out, outlen, "(missing)");
        return;
    }
    for (size_t i = 0; i < value_count(arr) && n < 512; i++)
        v[n++] = value_str(value_at(arr, i), NULL);
    join_sorted(v, n, out, outlen);
}

struct rcpt_row {
    const char *label;
    const char *role;
    const char *user;
    const char *rcpt;
    int code;
    const char *ecode;
    const char *norm;      /* rcpt in the reply; NULL: not checked */
    const char *mailboxes; /* sorted, comma-joined; NULL: not checked */
    const char *forward;
};

static const struct rcpt_row rcpt_rows[] = {
    {"account", "mta", NULL, "alice@example.test", 250, "2.1.5",
     "alice@example.test", "alice@example.test", ""},
    {"account, local part in capitals", "mta", NULL, "ALICE@example.test", 250,
     "2.1.5", "alice@example.test", "alice@example.test", ""},
    {"upper-case domain of ours is ours", "mta", NULL, "alice@EXAMPLE.TEST",
     250, "2.1.5", "alice@example.test", "alice@example.test", ""},
    {"disabled account", "mta", NULL, "carol@example.test", 550, "5.2.1", NULL,
     NULL, NULL},
    {"alias to several targets", "mta", NULL, "team@example.test", 250, "2.1.5",
     "team@example.test", "alice@example.test,bob@example.test",
     "friend@remote.test"},
    {"alias chain", "mta", NULL, "chain1@example.test", 250, "2.1.5", NULL,
     "dave@example.test", ""},
    {"alias chain of eight hops", "mta", NULL, "ok1@example.test", 250, "2.1.5",
     NULL, "alice@example.test", ""},
    {"alias chain too deep", "mta", NULL, "deep1@example.test", 550, "5.4.6",
     NULL, NULL, NULL},
    {"alias loop", "mta", NULL, "loopa@example.test", 550, "5.4.6", NULL, NULL,
     NULL},
    {"alias to itself", "mta", NULL, "selfloop@example.test", 550, "5.4.6",
     NULL, NULL, NULL},
    {"two aliases to one target", "mta", NULL, "diamond@example.test", 250,
     "2.1.5", NULL, "alice@example.test", ""},
    {"alias forwarding out", "mta", NULL, "fwd@example.test", 250, "2.1.5",
     NULL, "", "someone@remote.test"},
    {"alias with dead targets", "mta", NULL, "mixed@example.test", 250, "2.1.5",
     NULL, "alice@example.test", ""},
    {"alias with only dead targets", "mta", NULL, "dead@example.test", 550,
     "5.1.1", NULL, NULL, NULL},
    {"alias into another domain", "mta", NULL, "sales@other.test", 250, "2.1.5",
     NULL, "alice@example.test", ""},
    {"plus-addressing", "mta", NULL, "alice+news@example.test", 250, "2.1.5",
     "alice+news@example.test", "alice@example.test", ""},
    {"plus-addressing an alias", "mta", NULL, "team+x@example.test", 250,
     "2.1.5", NULL, "alice@example.test,bob@example.test",
     "friend@remote.test"},
    {"plus-addressing nobody", "mta", NULL, "nobody+x@example.test", 550,
     "5.1.1", NULL, NULL, NULL},
    {"catch-all", "mta", NULL, "whoever@catchall.test", 250, "2.1.5",
     "whoever@catchall.test", "boss@catchall.test", ""},
    {"catch-all domain, real account", "mta", NULL, "boss@catchall.test", 250,
     "2.1.5", NULL, "boss@catchall.test", ""},
    {"catch-all takes a percent", "mta", NULL, "x%evil.test@catchall.test", 250,
     "2.1.5", NULL, "boss@catchall.test", ""},
    {"unknown user", "mta", NULL, "nobody@example.test", 550, "5.1.1", NULL,
     NULL, NULL},
    {"disabled domain", "mta", NULL, "x@off.test", 550, "5.2.1", NULL, NULL,
     NULL},
    {"foreign domain", "mta", NULL, "bob@evil.test", 554, "5.7.1", NULL, NULL,
     NULL},
    {"percent hack", "mta", NULL, "alice%evil.test@example.test", 550, "5.1.1",
     NULL, NULL, NULL},
    {"bang path", "mta", NULL, "evil.test!alice@example.test", 550, "5.1.1",
     NULL, NULL, NULL},
    {"quoted at sign", "mta", NULL, "\"alice@evil.test\"@example.test", 550,
     "5.1.1", NULL, NULL, NULL},
    {"address literal", "mta", NULL, "alice@[127.0.0.1]", 554, "5.7.1", NULL,
     NULL, NULL},
    {"source route", "mta", NULL, "@example.test:bob@evil.test", 554, "5.7.1",
     NULL, NULL, NULL},
    {"our name as a prefix", "mta", NULL, "alice@example.test.evil.test", 554,
     "5.7.1", NULL, NULL, NULL},
    {"angle brackets", "mta", NULL, "<bob@evil.test>", 554, "5.7.1", NULL, NULL,
     NULL},
    {"no domain", "mta", NULL, "alice", 501, "5.1.3", NULL, NULL, NULL},
    {"msa without user relays nothing", "msa", NULL, "bob@evil.test", 554,
     "5.7.1", NULL, NULL, NULL},
    {"smtps without user relays nothing", "smtps", NULL, "bob@evil.test", 554,
     "5.7.1", NULL, NULL, NULL},
    {"msa with user may send anywhere", "msa", "alice@example.test",
     "Bob@Evil.Test", 250, "2.1.5", "Bob@evil.test", "", "Bob@evil.test"},
    {"smtps with user, to a literal", "smtps", "alice@example.test",
     "x@[192.0.2.1]", 250, "2.1.5", NULL, "", "x@[192.0.2.1]"},
    {"msa with user, local alias resolved", "msa", "alice@example.test",
     "team@example.test", 250, "2.1.5", NULL,
     "alice@example.test,bob@example.test", "friend@remote.test"},
    {"msa with user, unknown local user", "msa", "alice@example.test",
     "nobody@example.test", 550, "5.1.1", NULL, NULL, NULL},
    {"mta with user is still inbound", "mta", "alice@example.test",
     "bob@evil.test", 554, "5.7.1", NULL, NULL, NULL},
    {"unknown role is inbound", "nonsense", "alice@example.test",
     "bob@evil.test", 554, "5.7.1", NULL, NULL, NULL},
    {"account at its quota", "mta", NULL, "full@example.test", 452, "4.2.2",
     NULL, NULL, NULL},
    {"account under its quota", "mta", NULL, "roomy@example.test", 250, "2.1.5",
     NULL, "roomy@example.test", ""},
    {"alias with a target at its quota", "mta", NULL, "fullteam@example.test",
     452, "4.2.2", NULL, NULL, NULL},
    {"plus-addressing an account at its quota", "mta", NULL,
     "full+x@example.test", 452, "4.2.2", NULL, NULL, NULL},
};

START_TEST(test_rcpt)
{
    const struct rcpt_row *row = &rcpt_rows[_i];
    bus_client_t *c = world_client();
    struct req rq = {"guard.rcpt",         row->role, row->user, NULL,
                     "sender@remote.test", row->rcpt};
    envelope_t *reply = guard_call(c, &rq, NULL);
    const char *ecode = envelope_get_str(reply, ENV_KEY_ECODE);
    const char *norm = envelope_get_str(reply, ENV_KEY_RCPT);
    char got[4096];

    ck_assert_str_eq(envelope_type(reply), "guard.rcpt.reply");
    ck_assert_msg(envelope_code(reply) == row->code && ecode &&
                      strcmp(ecode, row->ecode) == 0,
                  "%s: got %d %s (%s), want %d %s", row->label,
                  envelope_code(reply), ecode,
                  envelope_get_str(reply, ENV_KEY_TEXT), row->code, row->ecode);
    if (row->norm)
        ck_assert_msg(norm && strcmp(norm, row->norm) == 0,
                      "%s: rcpt got %s, want %s", row->label, norm, row->norm);
    if (row->mailboxes) {
        reply_list(reply, ENV_KEY_MAILBOXES, got, sizeof(got));
        ck_assert_msg(strcmp(got, row->mailboxes) == 0,
                      "%s: mailboxes got \"%s\", want \"%s\"", row->label, got,
                      row->mailboxes);
    }
    if (row->forward) {
        reply_list(reply, ENV_KEY_FORWARD, got, sizeof(got));
        ck_assert_msg(strcmp(got, row->forward) == 0,
                      "%s: forward got \"%s\", want \"%s\"", row->label, got,
                      row->forward);
    }
    /* The texts say what went wrong, for the SMTP client to read. */
    if (row->code == 554)
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_TEXT),
                         "relaying denied");
    if (row->code == 550 && strcmp(row->ecode, "5.1.1") == 0)
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_TEXT), "no such user");
    if (strcmp(row->ecode, "5.4.6") == 0)
        ck_assert_msg(
            strstr(envelope_get_str(reply, ENV_KEY_TEXT), "alias") != NULL,
            "%s: text %s", row->label, envelope_get_str(reply, ENV_KEY_TEXT));
    envelope_destroy(&reply);
    bus_client_destroy(&c);
}
END_TEST

/* RFC 1870: a declared SIZE is weighed against what the quota leaves. */
static const struct size_row {
    const char *label, *rcpt;
    int64_t size;
    int code;
} size_rows[] = {
    {"fills the quota exactly", "roomy@example.test", 600, 250},
    {"one byte too many", "roomy@example.test", 601, 452},
    {"far too big", "roomy@example.test", 1 << 30, 452},
    {"no quota, any size", "alice@example.test", 1 << 30, 250},
    {"full account, small message", "full@example.test", 1, 452},
};

START_TEST(test_rcpt_size)
{
    const struct size_row *row = &size_rows[_i];
    bus_client_t *c = world_client();
    struct req rq = {"guard.rcpt",         "mta",    NULL, NULL,
                     "sender@remote.test", row->rcpt};
    envelope_t *reply = guard_call_sized(c, &rq, row->size, NULL);

    ck_assert_msg(envelope_code(reply) == row->code, "%s: got %d, want %d",
                  row->label, envelope_code(reply), row->code);
    if (row->code == 452) {
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.2.2");
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_TEXT), "Mailbox full");
    }
    envelope_destroy(&reply);
    bus_client_destroy(&c);
}
END_TEST

struct mail_row {
    const char *label;
    const char *user;
    const char *mail_from;
    int code;
    const char *ecode;
};

static const struct mail_row mail_rows[] = {
    {"unauthenticated, any sender", NULL, "bob@evil.test", 250, "2.1.0"},
    {"unauthenticated, null sender", NULL, "", 250, "2.1.0"},
    {"own address", "alice@example.test", "alice@example.test", 250, "2.1.0"},
    {"own address, other case", "alice@example.test", "ALICE@Example.Test", 250,
     "2.1.0"},
    {"user named in capitals", "Alice@Example.TEST", "alice@example.test", 250,
     "2.1.0"},
    {"own address with +tag", "alice@example.test", "alice+x@example.test", 250,
     "2.1.0"},
    {"alias that includes the user", "alice@example.test", "team@example.test",
     250, "2.1.0"},
    {"alias chain to the user", "dave@example.test", "chain1@example.test", 250,
     "2.1.0"},
    {"null sender", "alice@example.test", "", 250, "2.1.0"},
    {"another user's address", "alice@example.test", "bob@example.test", 553,
     "5.7.1"},
    {"alias without the user", "dave@example.test", "team@example.test", 553,
     "5.7.1"},
    {"remote address", "alice@example.test", "alice@evil.test", 553, "5.7.1"},
    {"unknown local address", "alice@example.test", "nobody@example.test", 553,
     "5.7.1"},
    {"catch-all owns nothing", "boss@catchall.test", "whoever@catchall.test",
     553, "5.7.1"},
    {"alias loop", "alice@example.test", "loopa@example.test", 553, "5.7.1"},
};

START_TEST(test_mail)
{
    const struct mail_row *row = &mail_rows[_i];
    bus_client_t *c = world_client();
    struct req rq = {"guard.mail",   row->user ? "msa" : "mta",
                     row->user,      NULL,
                     row->mail_from, NULL};
    envelope_t *reply = guard_call(c, &rq, NULL);
    const char *ecode = envelope_get_str(reply, ENV_KEY_ECODE);

    ck_assert_msg(envelope_code(reply) == row->code && ecode &&
                      strcmp(ecode, row->ecode) == 0,
                  "%s: got %d %s (%s), want %d %s", row->label,
                  envelope_code(reply), ecode,
                  envelope_get_str(reply, ENV_KEY_TEXT), row->code, row->ecode);
    if (row->code == 553)
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_TEXT),
                         "sender address not owned by user");
    envelope_destroy(&reply);
    bus_client_destroy(&c);
}
END_TEST

/* With guard.conn_per_minute 0 there is no limit and no counter. */
START_TEST(test_connect_unlimited)
{
    bus_client_t *c = world_client();
    struct req rq = {"guard.connect", "mta", NULL, "198.51.100.9", NULL, NULL};
    store_t *s;
    store_reply_t *r = NULL;
    char why[256];

    for (int i = 0; i < 20; i++) {
        envelope_t *reply = guard_call(c, &rq, NULL);

        ck_assert_int_eq(envelope_code(reply), 250);
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "2.0.0");
        envelope_destroy(&reply);
    }
    s = test_redis_connect(W.base, 1000);
    ck_assert_int_eq(store_cmdl(s, &r, why, sizeof(why), "KEYS",
                                "samotop:{rate}:conn:*", NULL),
                     0);
    ck_assert_int_eq(store_reply_count(r), 0);
    store_reply_free(&r);
    store_destroy(&s);
    bus_client_destroy(&c);
}
END_TEST

/* A string key's value (caller frees), or NULL when it has none. */
static char *
rget(store_t *s, const char *key)
{
    const char *argv[] = {"GET", key};
    store_reply_t *r = NULL;
    char why[256], *v = NULL;

    ck_assert_msg(store_cmd(s, &r, why, sizeof(why), 2, argv, NULL) == 0,
                  "redis GET: %s", why);
    if (store_reply_type(r) == STORE_STR)
        v = strdup(store_reply_str(r, NULL));
    store_reply_free(&r);
    return v;
}

/* Waits (3 s at most) until key holds want: the guard sends its counts
 * every guard.rate_flush_ms (100 here). Then waits a little more, so the
 * guard that sent it has its reply too. */
static void
wait_key(store_t *s, const char *key, const char *want, const char *what)
{
    int64_t until = test_now_ms() + 3000;
    char *v = NULL;

    for (;;) {
        free(v);
        v = rget(s, key);
        if ((v && strcmp(v, want) == 0) || test_now_ms() >= until)
            break;
        usleep(20000);
    }
    ck_assert_msg(v && strcmp(v, want) == 0, "%s: %s is %s, want %s", what, key,
                  v ? v : "(nil)", want);
    free(v);
    usleep(50000);
}

/* One guard.connect from ip; returns the reply's code. */
static int
connect_code(bus_client_t *c, const char *ip)
{
    struct req rq = {"guard.connect", "mta", NULL, ip, NULL, NULL};
    envelope_t *reply = guard_call(c, &rq, NULL);
    int code = envelope_code(reply);

    if (code == 451) {
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.7.1");
        ck_assert_ptr_nonnull(
            strstr(envelope_get_str(reply, ENV_KEY_TEXT), "too many"));
    }
    envelope_destroy(&reply);
    return code;
}

/* Waits out the last seconds of a minute, so that a run of requests falls
 * in one rate window. */
static void
same_minute(void)
{
    while (time(NULL) % 60 >= 55)
        usleep(200000);
}

START_TEST(test_conn_rate)
{
    bus_client_t *c = world_client();
    struct req rq = {"guard.connect", "mta", NULL, "192.0.2.1", NULL, NULL};
    envelope_t *reply;
    store_t *s;
    char key[STORE_KEY_MAX];
    long long minute, ttl;

    same_minute();
    minute = (long long)time(NULL) / 60;
    for (int i = 0; i < 3; i++) {
        reply = guard_call(c, &rq, NULL);
        ck_assert_msg(envelope_code(reply) == 250, "connection %d: got %d",
                      i + 1, envelope_code(reply));
        envelope_destroy(&reply);
    }
    reply = guard_call(c, &rq, NULL);
    ck_assert_int_eq(envelope_code(reply), 451);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.7.1");
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_TEXT),
                     "too many connections from 192.0.2.1, try later");
    envelope_destroy(&reply);

    /* Another client is counted apart. */
    rq.ip = "192.0.2.2";
    reply = guard_call(c, &rq, NULL);
    ck_assert_int_eq(envelope_code(reply), 250);
    envelope_destroy(&reply);

    /* The counter is where schemas/redis.md says, holds every attempt
     * (one flush interval later: the guard counts in memory first), and
     * it expires. */
    s = test_redis_connect(W.base, 1000);
    store_key_rate(key, "conn", "192.0.2.1", minute);
    wait_key(s, key, "4", "conn counter");
    ttl = test_redis_int(s, "TTL", key, NULL);
    ck_assert_msg(ttl > 0 && ttl <= 120, "ttl %lld", ttl);
    store_destroy(&s);
    bus_client_destroy(&c);
}
END_TEST

START_TEST(test_msg_rate)
{
    bus_client_t *c = world_client();
    struct req rq = {"guard.mail",      "mta", NULL, "192.0.2.3",
                     "bob@remote.test", NULL};
    envelope_t *reply;

    same_minute();
    for (int i = 0; i < 2; i++) {
        reply = guard_call(c, &rq, NULL);
        ck_assert_msg(envelope_code(reply) == 250, "message %d: got %d", i + 1,
                      envelope_code(reply));
        envelope_destroy(&reply);
    }
    reply = guard_call(c, &rq, NULL);
    ck_assert_int_eq(envelope_code(reply), 451);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.7.1");
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_TEXT),
                     "too many messages from 192.0.2.3, try later");
    envelope_destroy(&reply);
    /* The limit counts messages, not recipients: RCPT is not limited. */
    rq.type = "guard.rcpt";
    rq.rcpt = "alice@example.test";
    reply = guard_call(c, &rq, NULL);
    ck_assert_int_eq(envelope_code(reply), 250);
    envelope_destroy(&reply);
    bus_client_destroy(&c);
}
END_TEST

/* While Redis is away: every guard request that looks an address up
 * gets 451 4.3.0, quickly; rate limits are decided on the guard's own
 * counts, so guard.connect and an unauthenticated guard.mail go on. */
static void
expect_unavailable(bus_client_t *c, const char *when)
{
    static const struct req rqs[] = {
        {"guard.rcpt", "mta", NULL, NULL, "", "alice@example.test"},
        {"guard.mail", "msa", "alice@example.test", NULL, "team@example.test",
         NULL},
    };
    static const struct req local[] = {
        {"guard.connect", "mta", NULL, NULL, NULL, NULL},
        {"guard.mail", "mta", NULL, NULL, "bob@remote.test", NULL},
    };

    for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
        int64_t ms;
        envelope_t *reply = guard_call(c, &local[i], &ms);

        ck_assert_msg(envelope_code(reply) == 250,
                      "%s, %s: got %d (%s), want 250", when, local[i].type,
                      envelope_code(reply),
                      envelope_get_str(reply, ENV_KEY_TEXT));
        ck_assert_msg(ms < 500, "%s, %s: answered after %lld ms", when,
                      local[i].type, (long long)ms);
        envelope_destroy(&reply);
    }
    for (size_t i = 0; i < sizeof(rqs) / sizeof(rqs[0]); i++) {
        int64_t ms;
        envelope_t *reply = guard_call(c, &rqs[i], &ms);

        ck_assert_msg(envelope_code(reply) == 451,
                      "%s, %s: got %d (%s), want 451", when, rqs[i].type,
                      envelope_code(reply),
                      envelope_get_str(reply, ENV_KEY_TEXT));
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.3.0");
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_TEXT),
                         "policy store unavailable");
        ck_assert_msg(ms < 2000, "%s, %s: answered after %lld ms", when,
                      rqs[i].type, (long long)ms);
        envelope_destroy(&reply);
    }
}

/* Polls guard.rcpt until it says 250 again; returns how long it took. */
static int64_t
wait_recovered(bus_client_t *c, int ms)
{
    struct req rq = {"guard.rcpt", "mta", NULL, NULL, "", "alice@example.test"};
    int64_t t0 = test_now_ms();

    while (test_now_ms() - t0 < ms) {
        envelope_t *reply = guard_call(c, &rq, NULL);
        int code = envelope_code(reply);

        envelope_destroy(&reply);
        if (code == 250)
            return test_now_ms() - t0;
        ck_assert_int_eq(code, 451);
        usleep(100000);
    }
    return -1;
}

/* The outage tests kill and restart redis-server, so each starts a world
 * of its own, in its own (forked) test process. */
START_TEST(test_redis_killed)
{
    bus_client_t *c;
    int64_t ms;

    world_start(18720, NULL, NULL);
    c = world_client();

    ck_assert_int_ge(wait_recovered(c, 5000), 0);
    kill(W.redis, SIGKILL);
    waitpid(W.redis, NULL, 0);
    expect_unavailable(c, "redis killed");
    /* A second time, once the guard has surely seen the connection go. */
    usleep(300000);
    expect_unavailable(c, "redis still down");

    W.redis = test_redis_start(W.base);
    redis_fill(W.base);
    ms = wait_recovered(c, 6000);
    ck_assert_msg(ms >= 0, "guard did not recover after redis restarted");
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

START_TEST(test_redis_stalled)
{
    bus_client_t *c;
    int64_t ms;

    world_start(18730, NULL, NULL);
    c = world_client();

    ck_assert_int_ge(wait_recovered(c, 5000), 0);
    /* A Redis that takes the connection and never answers. */
    kill(W.redis, SIGSTOP);
    expect_unavailable(c, "redis stopped");
    kill(W.redis, SIGCONT);
    ms = wait_recovered(c, 6000);
    ck_assert_msg(ms >= 0, "guard did not recover after redis resumed");
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

/* A Redis that lost the script (SCRIPT FLUSH, a restart the guard did
 * not see) answers NOSCRIPT: the counts are not lost, the guard loads the
 * script again and sends them. */
START_TEST(test_rate_noscript)
{
    bus_client_t *c = world_client();
    store_t *s = test_redis_connect(W.base, 1000);
    char key[STORE_KEY_MAX];

    same_minute();
    store_key_rate(key, "conn", "192.0.2.4", (long long)time(NULL) / 60);
    ck_assert_int_eq(connect_code(c, "192.0.2.4"), 250);
    wait_key(s, key, "1", "first count");
    test_redis_int(s, "SCRIPT", "FLUSH", NULL);
    ck_assert_int_eq(connect_code(c, "192.0.2.4"), 250);
    wait_key(s, key, "2", "count after SCRIPT FLUSH");
    ck_assert_int_eq(connect_code(c, "192.0.2.4"), 250);
    ck_assert_int_eq(connect_code(c, "192.0.2.4"), 451);
    wait_key(s, key, "4", "count of the refused one too");
    store_destroy(&s);
    bus_client_destroy(&c);
}
END_TEST

/* A second broker and guard on ports base .. base+3 that share the world's
 * Redis, with one more "K=V" for the guard. */
struct pair {
    pid_t bus, guard;
    int base;
    char clients[64];
    char env[12][128];
    const char *envp[13];
};

static void
pair_start(struct pair *p, int base, const char *extra)
{
    char bus_path[4096], guard_path[4096];
    const char *bus_argv[] = {bus_path, "--instance", "t2", NULL};
    const char *guard_argv[] = {guard_path, "--instance", "g2", NULL};
    int n = 0;

    snprintf(bus_path, sizeof(bus_path), "%s", test_bin("samotop-bus"));
    snprintf(guard_path, sizeof(guard_path), "%s", test_bin("samotop-guard"));
    memset(p, 0, sizeof(*p));
    p->base = base;
    snprintf(p->clients, sizeof(p->clients), "tcp://127.0.0.1:%d", base + 1);
    snprintf(p->env[n++], 128, "SAMOTOP_BROKER_CLIENTS=%s", p->clients);
    snprintf(p->env[n++], 128, "SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(p->env[n++], 128, "SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:%d",
             base + 3);
    snprintf(p->env[n++], 128, "SAMOTOP_BUS_CLIENTS=%s", p->clients);
    snprintf(p->env[n++], 128, "SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(p->env[n++], 128, "SAMOTOP_BUS_TRACE=tcp://127.0.0.1:%d",
             base + 3);
    snprintf(p->env[n++], 128, "SAMOTOP_BUS_HEARTBEAT_MS=100");
    snprintf(p->env[n++], 128, "SAMOTOP_REDIS_PORT=%d", W.base);
    snprintf(p->env[n++], 128, "%s", extra);
    for (int i = 0; i < n; i++)
        p->envp[i] = p->env[i];
    p->envp[n] = NULL;
    p->bus = test_spawn(bus_argv, p->envp);
    p->guard = test_spawn(guard_argv, p->envp);
}

static void
pair_stop(struct pair *p)
{
    test_stop_clean(&p->guard, "second samotop-guard", 5000);
    test_stop(p->bus, SIGTERM, 5000);
}

/* Two guard processes share a limit through Redis: each decides on the
 * global count it learned at its last flush plus its own events since. */
START_TEST(test_rate_two_guards)
{
    struct pair p;
    bus_client_t *a, *b;
    store_t *s;
    char key[STORE_KEY_MAX];
    const char *ip = "192.0.2.5";

    world_start(18750, "SAMOTOP_GUARD_CONN_PER_MINUTE=5", NULL);
    pair_start(&p, 18760, "SAMOTOP_GUARD_CONN_PER_MINUTE=5");
    a = world_client();
    b = guard_client(p.clients, p.guard, p.base);
    s = test_redis_connect(W.base, 1000);
    same_minute();
    store_key_rate(key, "conn", ip, (long long)time(NULL) / 60);

    for (int i = 0; i < 3; i++)
        ck_assert_msg(connect_code(a, ip) == 250, "A, connection %d", i + 1);
    wait_key(s, key, "3", "A's three");
    /* B has not counted this address yet: until its first flush comes
     * back it knows only its own event (the lag guard_rate.c states). */
    ck_assert_int_eq(connect_code(b, ip), 250);
    wait_key(s, key, "4", "A's three and B's one");
    /* Now B knows A's: its 5th is the limit, its 6th over it, though B
     * itself counted only three. */
    ck_assert_msg(connect_code(b, ip) == 250, "B at the global 5th");
    ck_assert_msg(connect_code(b, ip) == 451, "B at the global 6th");
    wait_key(s, key, "6", "both guards' events");
    /* A learns B's events at its next flush: it refuses from then on. */
    connect_code(a, ip);
    wait_key(s, key, "7", "A's next");
    ck_assert_msg(connect_code(a, ip) == 451, "A after learning B's");
    ck_assert_msg(connect_code(b, ip) == 451, "B still");
    /* Another address is counted apart, by both. */
    ck_assert_int_eq(connect_code(a, "192.0.2.6"), 250);
    ck_assert_int_eq(connect_code(b, "192.0.2.6"), 250);

    store_destroy(&s);
    bus_client_destroy(&a);
    bus_client_destroy(&b);
    pair_stop(&p);
    world_stop();
}
END_TEST

/* With Redis down the limits still hold, on the guard's own counts, and
 * those counts reach Redis once it is back. */
START_TEST(test_rate_redis_down)
{
    bus_client_t *c;
    store_t *s;
    char key[STORE_KEY_MAX];
    const char *ip = "192.0.2.8";
    struct req rcpt = {"guard.rcpt", "mta", NULL, ip, "", "alice@example.test"};
    envelope_t *reply;

    world_start(18770, "SAMOTOP_GUARD_CONN_PER_MINUTE=3", NULL);
    c = world_client();
    ck_assert_int_ge(wait_recovered(c, 5000), 0);
    same_minute();
    store_key_rate(key, "conn", ip, (long long)time(NULL) / 60);
    kill(W.redis, SIGKILL);
    waitpid(W.redis, NULL, 0);
    W.redis = 0;

    for (int i = 0; i < 3; i++)
        ck_assert_msg(connect_code(c, ip) == 250, "connection %d", i + 1);
    ck_assert_int_eq(connect_code(c, ip), 451);
    /* Lookups still need Redis. */
    reply = guard_call(c, &rcpt, NULL);
    ck_assert_int_eq(envelope_code(reply), 451);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.3.0");
    envelope_destroy(&reply);

    /* Back (empty, no persistence here): the four events are sent. */
    W.redis = test_redis_start(W.base);
    s = test_redis_connect(W.base, 1000);
    {
        int64_t until = test_now_ms() + 6000;
        char *v = NULL;

        while ((v = rget(s, key)) == NULL && test_now_ms() < until)
            usleep(50000);
        free(v);
    }
    wait_key(s, key, "4", "counts kept while Redis was down");
    ck_assert_int_eq(connect_code(c, ip), 451);
    store_destroy(&s);
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

struct outcome {
    int done, err, code;
};

static void
on_outcome(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct outcome *o = arg;

    (void)text;
    o->done = 1;
    o->err = err;
    o->code = reply ? envelope_code(reply) : 0;
}

static void
on_quit(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

/* Runs the loop for ms, or until o is done when o is not NULL. */
static void
run_for(loop_t *loop, struct outcome *o, int ms)
{
    int64_t until = test_now_ms() + ms;

    while (test_now_ms() < until && !(o && o->done)) {
        loop_timer_add(loop, 10, on_quit, NULL);
        loop_run(loop);
    }
}

/* A guard stopped while requests wait on a stalled Redis answers them
 * (451) or drops them, and exits cleanly, freeing every job. */
START_TEST(test_stop_while_waiting)
{
    loop_t *loop = loop_new();
    struct outcome o = {0};
    bus_client_t *c, *sync;
    envelope_t *req;
    char why[256];

    world_start(18740, NULL, NULL);
    sync = world_client();
    ck_assert_int_ge(wait_recovered(sync, 5000), 0);
    c = bus_client_new(loop, W.clients, 1 << 20, why, sizeof(why));
    ck_assert_ptr_nonnull(c);
    kill(W.redis, SIGSTOP);
    req = envelope_new("guard.rcpt", NULL, 3000);
    value_set_str(envelope_body(req), ENV_KEY_CLIENT_IP, "192.0.2.7");
    value_set_str(envelope_body(req), ENV_KEY_ROLE, "mta");
    value_set_str(envelope_body(req), ENV_KEY_MAIL_FROM, "");
    value_set_str(envelope_body(req), ENV_KEY_RCPT, "team@example.test");
    ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o), 0);
    run_for(loop, NULL, 300); /* the guard has it, waiting on Redis */
    ck_assert_int_eq(o.done, 0);
    test_stop_clean(&W.guard, "samotop-guard", 5000);
    run_for(loop, &o, 4000);
    ck_assert_int_eq(o.done, 1);
    ck_assert_msg(o.err != 0 || o.code == 451, "got err %d code %d", o.err,
                  o.code);
    kill(W.redis, SIGCONT);
    bus_client_destroy(&c);
    bus_client_destroy(&sync);
    loop_destroy(&loop);
    world_stop();
}
END_TEST

static Suite *
guard_suite(void)
{
    Suite *s = suite_create("guard");
    TCase *tc;

    tc = tcase_create("resolve");
    tcase_add_loop_test(tc, test_resolve, 0,
                        sizeof(resolve_rows) / sizeof(resolve_rows[0]));
    tcase_add_test(tc, test_resolve_no_postmaster);
    tcase_add_loop_test(tc, test_resolve_prefetch, 0,
                        sizeof(resolve_rows) / sizeof(resolve_rows[0]));
    tcase_add_loop_test(tc, test_resolve_rounds, 0,
                        sizeof(rounds_rows) / sizeof(rounds_rows[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("policy");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, world_rcpt_start, world_stop);
    tcase_add_loop_test(tc, test_rcpt, 0,
                        sizeof(rcpt_rows) / sizeof(rcpt_rows[0]));
    tcase_add_loop_test(tc, test_rcpt_size, 0,
                        sizeof(size_rows) / sizeof(size_rows[0]));
    tcase_add_loop_test(tc, test_mail, 0,
                        sizeof(mail_rows) / sizeof(mail_rows[0]));
    tcase_add_test(tc, test_connect_unlimited);
    suite_add_tcase(s, tc);

    tc = tcase_create("rate");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, world_rate_start, world_stop);
    tcase_add_test(tc, test_conn_rate);
    tcase_add_test(tc, test_msg_rate);
    tcase_add_test(tc, test_rate_noscript);
    suite_add_tcase(s, tc);

    tc = tcase_create("rate_shared");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_rate_two_guards);
    tcase_add_test(tc, test_rate_redis_down);
    suite_add_tcase(s, tc);

    tc = tcase_create("outage");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_redis_killed);
    tcase_add_test(tc, test_redis_stalled);
    tcase_add_test(tc, test_stop_while_waiting);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(guard_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
