/*
 * guard.h - samotop-guard's parts: address parsing, the recipient resolver,
 * and the handlers that run them against Redis.
 *
 * The resolver (guard_resolve.c) is pure: it never touches Redis. It asks
 * questions ("is D one of our domains?", "what is L@D?") through
 * guard_resolve_step() and is told the answers through the
 * guard_resolve_*_answer() calls, so a test can drive it from a table in
 * memory, and guard_handlers.c drives it from asynchronous Redis replies.
 * The rate counters (guard_rate.c) are counted in the guard and shared with
 * the other guard copies through Redis in the background.
 * Everything here runs on the actor's loop thread. Strings a query or a verdict
 * returns are borrowed from the resolver and live until
 * guard_resolve_destroy().
 */
#ifndef SAMOTOP_GUARD_H
#define SAMOTOP_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "actor.h"
#include "lib/smtp_addr.h"
#include "store.h"

/* Alias hops allowed along one path (a catch-all counts as one). */
#define GUARD_MAX_DEPTH 8
/* Distinct addresses one recipient may expand to before it is refused. */
#define GUARD_MAX_NODES 256
/* Room for an address written out: a local part quoted with every octet
 * escaped, "@", a domain. */
#define GUARD_ADDR_MAX (2 * SMTP_LOCAL_MAX + 3 + SMTP_DOMAIN_MAX)

/* An address split by guard_addr_parse(): local is unquoted (a quoted local
 * part's content, escapes removed), domain is in lower case, or an address
 * literal with its brackets. */
struct guard_addr {
    char local[SMTP_LOCAL_MAX + 1];
    char domain[SMTP_DOMAIN_MAX + 1];
};

/* Splits text ("local@domain", with or without angle brackets, a source
 * route "@a,@b:" dropped) into out with lib/smtp_addr.h, UTF-8 allowed;
 * the domain comes out in lower-case A-labels (lib/idna.h).
 * Returns 0, or ERR_INVAL for anything that is not one RFC 5321 mailbox
 * (also "<>" and a bare "Postmaster"). */
int guard_addr_parse(const char *text, struct guard_addr *out);

/* Whether domain is an address literal ("[192.0.2.1]", "[IPv6:...]"). */
bool guard_addr_is_literal(const char *domain);

/* Writes local@domain into out (outlen bytes), quoting the local part when
 * it is not a dot-atom. Returns 0 or ERR_INVAL when it does not fit. */
int guard_addr_format(const char *local, const char *domain, char *out,
                      size_t outlen);

/* ASCII lower-casing in place (domains are A-labels; local parts are
 * compared case-insensitively as RFC 5321 section 2.4 allows). */
void guard_lower(char *s);

typedef struct guard_resolve guard_resolve_t;

enum guard_query_kind {
    GUARD_Q_DONE,   /* no question: the verdict is ready */
    GUARD_Q_DOMAIN, /* answer with guard_resolve_domain_answer() */
    GUARD_Q_LOCAL,  /* answer with guard_resolve_local_answer() */
};

struct guard_query {
    enum guard_query_kind kind;
    const char *domain; /* lower case */
    const char *local;  /* lower case, unquoted: GUARD_Q_LOCAL's subject;
                           with GUARD_Q_DOMAIN, the local part asked next
                           if the domain is ours (see the answers) */
};

/* What the store knows of a domain: in samotop:domains, its hash's
 * disabled flag and catch-all address (NULL or "" when none). */
struct guard_domain_info {
    bool ours;
    bool disabled;
    const char *catchall;
};

/* What the store knows of L@D: an account (and its disabled flag), or the
 * alias's targets (ntargets 0 when L is no alias). */
struct guard_local_info {
    bool account;
    bool disabled;
    const char *const *targets;
    size_t ntargets;
};

enum {
    GUARD_RELAY = 1,       /* remote recipients allowed (authenticated) */
    GUARD_NO_CATCHALL = 2, /* a catch-all does not make an address ours */
};

/* The outcome: code/ecode/text, and on success (code 250) rcpt (the address
 * normalised), mailboxes (unique local accounts, "local@domain" in lower
 * case) and forward (unique remote addresses). */
struct guard_verdict {
    int code;
    const char *ecode;
    const char *text;
    const char *rcpt;
    const char *const *mailboxes;
    size_t nmailboxes;
    const char *const *forward;
    size_t nforward;
};

/* A resolver for address text with GUARD_* flags; trace (may be NULL) goes
 * into its log lines. postmaster (NULL or "": none) is where mail for the
 * postmaster goes when nothing else takes it (RFC 5321 4.5.1): the
 * domain-less "postmaster" (<Postmaster>, 4.1.1.3), and postmaster@ any
 * of our domains with no account, alias or catch-all for that name. Never
 * fails: a bad address gives a 501 verdict at the first step. Caller owns
 * it. */
guard_resolve_t *guard_resolve_new(const char *address, int flags,
                                   const char *postmaster, const char *trace);
void guard_resolve_destroy(guard_resolve_t **r_p);

/* Runs until the resolver needs an answer (fills *q and returns its kind)
 * or has its verdict (returns GUARD_Q_DONE). Each question must be answered
 * before the next step. */
enum guard_query_kind guard_resolve_step(guard_resolve_t *r,
                                         struct guard_query *q);

/* The answers; the resolver copies what it keeps. A GUARD_Q_DOMAIN
 * question may be answered with the facts of q->local@q->domain too, in
 * the same round: guard_resolve_local_answer() right after
 * guard_resolve_domain_answer(). The next step then uses them instead of
 * asking (and drops them when the domain is not ours). */
void guard_resolve_domain_answer(guard_resolve_t *r,
                                 const struct guard_domain_info *info);
void guard_resolve_local_answer(guard_resolve_t *r,
                                const struct guard_local_info *info);

/* The verdict, once guard_resolve_step() has returned GUARD_Q_DONE;
 * borrowed. */
const struct guard_verdict *guard_resolve_verdict(const guard_resolve_t *r);

/* Number of questions asked so far, which is the number of rounds when
 * each domain question is answered with its local part (for tests and
 * logs). */
int guard_resolve_queries(const guard_resolve_t *r);

typedef struct guard_rate guard_rate_t;

/* Rate counters on loop that flush into store (borrowed; it may be down)
 * every flush_ms. Never fails. Destroy them after the store, whose
 * destruction calls back the flush that is out. */
guard_rate_t *guard_rate_new(loop_t *loop, store_async_t *store, int flush_ms);
void guard_rate_destroy(guard_rate_t **r_p);

/* Counts one event of kind ("conn", "msg", ...) for subject (a client
 * address or a user) in this minute and returns the minute's count with
 * it: the global count learned at the last flush plus this guard's events
 * since. Answers at once, whether Redis is up or not. */
long long guard_rate_hit(guard_rate_t *r, const char *kind,
                         const char *subject);

/* The handlers and hooks (guard_handlers.c). */
int guard_init(actor_t *a);
void guard_fini(actor_t *a);
/* /ready (bus/actor.h): 0 while the Redis connection is up, else -1
 * with the reason in why. */
int guard_ready(actor_t *a, char *why, size_t whylen);
void guard_on_connect(actor_t *a, bus_request_t **req_p);
void guard_on_mail(actor_t *a, bus_request_t **req_p);
void guard_on_rcpt(actor_t *a, bus_request_t **req_p);

/* guard_metrics.c: registers the guard's metrics in m (from init), and
 * counts the decision reply gives to req (both borrowed). */
void guard_metrics_init(metrics_t *m);
void guard_metrics_decision(const envelope_t *req, const envelope_t *reply);

#endif
