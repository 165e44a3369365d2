/*
 * guard_resolve.c - where a recipient's mail goes, as a pure state machine.
 *
 * Resolution of L@D (schemas/redis.md): D must be one of our domains, else
 * the address is remote (refused as relaying at the top unless
 * GUARD_RELAY); then L is an account, an alias whose targets are resolved
 * in turn, L without its "+tag", or the domain's catch-all, in that order.
 *
 * Alias expansion is a depth-first walk with an explicit stack, so that it
 * can stop at every question and go on when the answer comes. The frames
 * on the stack are the path from the recipient down: meeting one of them
 * again is a loop. An address already fully resolved is not resolved
 * twice (two aliases may share a target without being a loop); it keeps
 * the height of the walk below it so that the depth limit holds for every
 * path, also the ones that reach it second.
 *
 * A question about a domain names the local part that comes next if the
 * domain is ours, so that a driver can fetch both in one round: an answer
 * about that local part given with the domain's is kept for the step that
 * follows, and used instead of asking.
 *
 * A failure at the top (unknown user, disabled, relaying) is the verdict.
 * Below the top, a target that cannot take mail is skipped with a warning
 * and the rest still get it; only when nothing is left does the first
 * such failure become the verdict. Loops and chains that go too deep are
 * configuration errors and refuse the whole recipient, so the sender hears
 * of them (550 5.4.6) instead of mail going to half an alias.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "guard.h"
#include "lib/log.h"
#include "lib/xalloc.h"

enum frame_state {
    F_DOMAIN, /* needs its domain's facts */
    F_LOCAL,  /* asked about its local part */
    F_GOT,    /* has the answer about its local part */
    F_EXPAND, /* walking its targets */
};

struct frame {
    char *key;    /* lower(local)@domain: the node's identity */
    char *local;  /* as parsed (unquoted), case kept for forwarding */
    char *domain; /* lower case */
    char *lookup; /* the local part asked about (lower case; no +tag) */
    int depth, height;
    enum frame_state state;
    bool plus_tried, account, disabled;
    char **targets;
    size_t ntargets, next;
};

struct dom {
    char *name;
    bool ours, disabled;
    char *catchall;
};

struct done {
    char *key;
    int height;
};

struct strv {
    char **v;
    size_t n, cap;
};

/* Facts of a local part fetched with its domain's. */
struct prefetch {
    bool ok;              /* the domain question allows one now */
    bool got;             /* given, for the next step */
    char *domain, *local; /* what it is about */
    bool account, disabled;
    char **targets;
    size_t ntargets;
};

struct guard_resolve {
    int flags;
    char *trace;
    char *postmaster; /* guard.postmaster when it parses, or NULL */
    char *pm_key;     /* its node key */
    char *rcpt;
    bool finished;
    enum guard_query_kind asked;
    int nqueries, nnodes;

    struct frame *stack;
    size_t nstack, capstack;
    struct dom *doms;
    size_t ndoms;
    struct done *done;
    size_t ndone;

    struct prefetch pre;
    struct strv mailboxes, forward;
    /* The first failure met below the top, for when nothing is left. */
    int first_code;
    const char *first_ecode, *first_text;

    struct guard_verdict verdict;
};

static void
strv_add_unique(struct strv *sv, const char *s)
{
    for (size_t i = 0; i < sv->n; i++)
        if (strcmp(sv->v[i], s) == 0)
            return;
    if (sv->n == sv->cap) {
        sv->cap = sv->cap ? sv->cap * 2 : 4;
        sv->v = xrealloc(sv->v, sv->cap * sizeof(*sv->v));
    }
    sv->v[sv->n++] = xstrdup(s);
}

static void
strv_free(struct strv *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    memset(sv, 0, sizeof(*sv));
}

static void
prefetch_clear(struct prefetch *p)
{
    for (size_t i = 0; i < p->ntargets; i++)
        free(p->targets[i]);
    free(p->targets);
    free(p->domain);
    free(p->local);
    memset(p, 0, sizeof(*p));
}

/* Copies an answer's targets (none for an account). */
static void
copy_targets(const struct guard_local_info *info, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (info->account || info->ntargets == 0)
        return;
    *out = xcalloc(info->ntargets, sizeof(**out));
    for (size_t i = 0; i < info->ntargets; i++)
        (*out)[i] = xstrdup(info->targets[i]);
    *n = info->ntargets;
}

/* The local part to ask about: the frame's, in lower case. */
static void
set_lookup(struct frame *f)
{
    if (f->lookup != NULL)
        return;
    f->lookup = xstrdup(f->local);
    guard_lower(f->lookup);
}

static void
frame_free(struct frame *f)
{
    free(f->key);
    free(f->local);
    free(f->domain);
    free(f->lookup);
    for (size_t i = 0; i < f->ntargets; i++)
        free(f->targets[i]);
    free(f->targets);
}

/* The driver broke the ask/answer protocol: a bug, not bad input. */
static void __attribute__((noreturn))
misuse(const guard_resolve_t *r, const char *what)
{
    log_err(r->trace, "guard_resolve_misuse", "reason=%s", log_q(what));
    abort();
}

static void
set_verdict(guard_resolve_t *r, int code, const char *ecode, const char *text)
{
    r->verdict.code = code;
    r->verdict.ecode = ecode;
    r->verdict.text = text;
    r->finished = true;
}

/* A failure that ends the resolution whatever the rest would give. */
static void
fail_all(guard_resolve_t *r, int code, const char *ecode, const char *text,
         const char *at)
{
    /* A loop or a chain too deep is the administrator's to fix. */
    log_event(code == 554 ? LL_INFO : LL_WARN, r->trace,
              "guard_resolve_refused", "rcpt=%s at=%s reason=%s",
              log_q(r->rcpt ? r->rcpt : "-"), log_q(at), log_q(text));
    set_verdict(r, code, ecode, text);
}

static struct frame *
top(guard_resolve_t *r)
{
    return r->nstack ? &r->stack[r->nstack - 1] : NULL;
}

static char *
make_key(const char *local, const char *domain)
{
    char *k = xasprintf("%s@%s", local, domain);

    guard_lower(k);
    return k;
}

/* Pushes a node for a parsed address at depth; the checks for loops and
 * depth are the caller's. */
static void
push(guard_resolve_t *r, const struct guard_addr *a, int depth)
{
    struct frame *f;

    if (r->nstack == r->capstack) {
        r->capstack = r->capstack ? r->capstack * 2 : 8;
        r->stack = xrealloc(r->stack, r->capstack * sizeof(*r->stack));
    }
    f = &r->stack[r->nstack++];
    memset(f, 0, sizeof(*f));
    f->key = make_key(a->local, a->domain);
    f->local = xstrdup(a->local);
    f->domain = xstrdup(a->domain);
    guard_lower(f->domain);
    f->depth = depth;
    f->state = F_DOMAIN;
    r->nnodes++;
}

static struct done *
done_find(guard_resolve_t *r, const char *key)
{
    for (size_t i = 0; i < r->ndone; i++)
        if (strcmp(r->done[i].key, key) == 0)
            return &r->done[i];
    return NULL;
}

/* Pops the top frame, remembering it as resolved with its height. */
static void
pop(guard_resolve_t *r)
{
    struct frame *f = top(r);
    int h = f->height;

    r->done = xrealloc(r->done, (r->ndone + 1) * sizeof(*r->done));
    r->done[r->ndone].key = f->key;
    r->done[r->ndone].height = h;
    r->ndone++;
    f->key = NULL;
    frame_free(f);
    r->nstack--;
    if ((f = top(r)) != NULL && f->height < h + 1)
        f->height = h + 1;
}

/* The top node cannot take mail: the verdict when it is the recipient
 * itself, else a skipped target. */
static void
node_fail(guard_resolve_t *r, int code, const char *ecode, const char *text)
{
    struct frame *f = top(r);

    if (f->depth == 0) {
        set_verdict(r, code, ecode, text);
        return;
    }
    log_warn(r->trace, "guard_alias_target_skipped",
             "rcpt=%s target=%s code=%d reason=%s", log_q(r->rcpt),
             log_q(f->key), code, log_q(text));
    if (r->first_code == 0) {
        r->first_code = code;
        r->first_ecode = ecode;
        r->first_text = text;
    }
    pop(r);
}

static struct dom *
dom_find(guard_resolve_t *r, const char *name)
{
    for (size_t i = 0; i < r->ndoms; i++)
        if (strcmp(r->doms[i].name, name) == 0)
            return &r->doms[i];
    return NULL;
}

static void
add_forward(guard_resolve_t *r, const struct frame *f)
{
    char addr[GUARD_ADDR_MAX + 1];

    if (guard_addr_format(f->local, f->domain, addr, sizeof(addr)) == 0)
        strv_add_unique(&r->forward, addr);
}

/* Takes the parent's next target: a node to walk, or skipped. */
static void
push_target(guard_resolve_t *r, struct frame *parent, const char *text)
{
    struct guard_addr a;
    struct done *d;
    char *key;
    int depth = parent->depth + 1;

    if (guard_addr_parse(text, &a) != 0) {
        log_warn(r->trace, "guard_alias_target_bad",
                 "rcpt=%s alias=%s target=%s", log_q(r->rcpt),
                 log_q(parent->key), log_q(text));
        if (r->first_code == 0) {
            r->first_code = 550;
            r->first_ecode = "5.1.1";
            r->first_text = "no such user";
        }
        return;
    }
    if (depth > GUARD_MAX_DEPTH) {
        fail_all(r, 550, "5.4.6", "alias chain too deep", parent->key);
        return;
    }
    key = make_key(a.local, a.domain);
    for (size_t i = 0; i < r->nstack; i++)
        if (strcmp(r->stack[i].key, key) == 0) {
            fail_all(r, 550, "5.4.6", "alias loop", key);
            free(key);
            return;
        }
    if ((d = done_find(r, key)) != NULL) {
        if (depth + d->height > GUARD_MAX_DEPTH)
            fail_all(r, 550, "5.4.6", "alias chain too deep", key);
        else if (parent->height < d->height + 1)
            parent->height = d->height + 1;
        free(key);
        return;
    }
    free(key);
    if (r->nnodes >= GUARD_MAX_NODES) {
        fail_all(r, 550, "5.4.6", "alias expands to too many addresses",
                 parent->key);
        return;
    }
    push(r, &a, depth);
}

/* The top node's domain is known: decide what to ask or do next. Returns
 * true when a question is ready in *q. */
static bool
on_domain(guard_resolve_t *r, struct frame *f, const struct dom *d,
          struct guard_query *q)
{
    if (d == NULL || !d->ours) {
        if (f->depth == 0 && !(r->flags & GUARD_RELAY)) {
            fail_all(r, 554, "5.7.1", "relaying denied", f->key);
            return false;
        }
        add_forward(r, f);
        pop(r);
        return false;
    }
    if (f->depth == 0) {
        /* Ours: the normalised recipient is all lower case. */
        char addr[GUARD_ADDR_MAX + 1], *low = xstrdup(f->local);

        guard_lower(low);
        if (guard_addr_format(low, f->domain, addr, sizeof(addr)) == 0) {
            free(r->rcpt);
            r->rcpt = xstrdup(addr);
        }
        free(low);
    }
    if (d->disabled) {
        node_fail(r, 550, "5.2.1", "domain disabled");
        return false;
    }
    set_lookup(f);
    if (r->pre.got && strcmp(r->pre.domain, f->domain) == 0 &&
        strcmp(r->pre.local, f->lookup) == 0) {
        /* Fetched with the domain. */
        f->account = r->pre.account;
        f->disabled = r->pre.disabled;
        f->targets = r->pre.targets;
        f->ntargets = r->pre.ntargets;
        r->pre.targets = NULL;
        r->pre.ntargets = 0;
        r->pre.got = false;
        f->state = F_GOT;
        return false;
    }
    f->state = F_LOCAL;
    q->kind = GUARD_Q_LOCAL;
    q->domain = f->domain;
    q->local = f->lookup;
    return true;
}

/* RFC 5321 4.5.1: a server MUST take mail for postmaster at every domain
 * it serves. When one of ours has no account, alias or catch-all for it,
 * the node expands to guard.postmaster (unless it is that address). */
static bool
postmaster_fallback(guard_resolve_t *r, struct frame *f)
{
    if (r->postmaster == NULL || strcasecmp(f->local, "postmaster") != 0 ||
        (r->flags & GUARD_NO_CATCHALL) || strcmp(r->pm_key, f->key) == 0)
        return false;
    f->targets = xcalloc(1, sizeof(*f->targets));
    f->targets[0] = xstrdup(r->postmaster);
    f->ntargets = 1;
    f->state = F_EXPAND;
    return true;
}

/* The top node's local part is known. Returns true when a question is
 * ready in *q. */
static bool
on_local(guard_resolve_t *r, struct frame *f, struct guard_query *q)
{
    const struct dom *d = dom_find(r, f->domain);
    char *plus;

    if (f->account) {
        char *box;

        if (f->disabled) {
            node_fail(r, 550, "5.2.1", "mailbox disabled");
            return false;
        }
        box = xasprintf("%s@%s", f->lookup, f->domain);
        strv_add_unique(&r->mailboxes, box);
        free(box);
        pop(r);
        return false;
    }
    if (f->ntargets > 0) {
        f->state = F_EXPAND;
        return false;
    }
    plus = strchr(f->lookup, '+');
    if (!f->plus_tried && plus != NULL && plus != f->lookup) {
        f->plus_tried = true;
        *plus = '\0';
        f->state = F_LOCAL;
        q->kind = GUARD_Q_LOCAL;
        q->domain = f->domain;
        q->local = f->lookup;
        return true;
    }
    if (d && d->catchall && *d->catchall && !(r->flags & GUARD_NO_CATCHALL)) {
        f->targets = xcalloc(1, sizeof(*f->targets));
        f->targets[0] = xstrdup(d->catchall);
        f->ntargets = 1;
        f->state = F_EXPAND;
        return false;
    }
    if (postmaster_fallback(r, f))
        return false;
    node_fail(r, 550, "5.1.1", "no such user");
    return false;
}

guard_resolve_t *
guard_resolve_new(const char *address, int flags, const char *postmaster,
                  const char *trace)
{
    guard_resolve_t *r = xcalloc(1, sizeof(*r));
    struct guard_addr a, pm;

    r->flags = flags;
    r->trace = trace ? xstrdup(trace) : NULL;
    if (postmaster && *postmaster && guard_addr_parse(postmaster, &pm) == 0) {
        r->postmaster = xstrdup(postmaster);
        r->pm_key = make_key(pm.local, pm.domain);
    }
    if (strcasecmp(address, "postmaster") == 0 ||
        strcasecmp(address, "<postmaster>") == 0) {
        /* "<Postmaster>" with no domain (RFC 5321 4.1.1.3), which the
         * listener hands over as "postmaster": the one recipient without
         * a domain, and it MUST be taken (4.5.1). It stands for
         * guard.postmaster, which is resolved as an alias target is. */
        r->rcpt = xstrdup("postmaster");
        if (r->postmaster == NULL || (flags & GUARD_NO_CATCHALL)) {
            set_verdict(r, 550, "5.1.1", "no postmaster address set");
            return r;
        }
        push(r, &pm, 1);
        return r;
    }
    if (guard_addr_parse(address, &a) != 0) {
        r->rcpt = xstrdup(address);
        set_verdict(r, 501, "5.1.3", "bad address syntax");
        return r;
    }
    push(r, &a, 0);
    /* Until the domain proves ours, only the domain is lower-cased: a
     * remote local part is the remote server's business. */
    {
        char addr[GUARD_ADDR_MAX + 1];

        if (guard_addr_format(a.local, a.domain, addr, sizeof(addr)) == 0)
            r->rcpt = xstrdup(addr);
        else
            r->rcpt = xstrdup(address);
    }
    return r;
}

void
guard_resolve_destroy(guard_resolve_t **r_p)
{
    guard_resolve_t *r = *r_p;

    if (r == NULL)
        return;
    while (r->nstack)
        frame_free(&r->stack[--r->nstack]);
    free(r->stack);
    for (size_t i = 0; i < r->ndoms; i++) {
        free(r->doms[i].name);
        free(r->doms[i].catchall);
    }
    free(r->doms);
    for (size_t i = 0; i < r->ndone; i++)
        free(r->done[i].key);
    free(r->done);
    prefetch_clear(&r->pre);
    strv_free(&r->mailboxes);
    strv_free(&r->forward);
    free(r->rcpt);
    free(r->trace);
    free(r->postmaster);
    free(r->pm_key);
    free(r);
    *r_p = NULL;
}

static void
finish(guard_resolve_t *r)
{
    if (r->mailboxes.n + r->forward.n == 0) {
        if (r->first_code)
            set_verdict(r, r->first_code, r->first_ecode, r->first_text);
        else
            set_verdict(r, 550, "5.1.1", "no such user");
        return;
    }
    set_verdict(r, 250, "2.1.5", "recipient ok");
}

enum guard_query_kind
guard_resolve_step(guard_resolve_t *r, struct guard_query *q)
{
    memset(q, 0, sizeof(*q));
    if (r->asked != GUARD_Q_DONE)
        misuse(r, "step with a question unanswered");
    r->pre.ok = false;
    while (!r->finished) {
        struct frame *f = top(r);

        if (f == NULL) {
            finish(r);
            break;
        }
        switch (f->state) {
        case F_DOMAIN: {
            const struct dom *d;

            if (guard_addr_is_literal(f->domain)) {
                /* An address literal is never one of our domains. */
                if (on_domain(r, f, NULL, q))
                    goto ask;
                break;
            }
            if ((d = dom_find(r, f->domain)) == NULL) {
                /* The local part to ask next if the domain is ours. */
                set_lookup(f);
                q->kind = GUARD_Q_DOMAIN;
                q->domain = f->domain;
                q->local = f->lookup;
                goto ask;
            }
            if (on_domain(r, f, d, q))
                goto ask;
            break;
        }
        case F_LOCAL:
            /* Only reached with an answer pending: see the check above. */
            misuse(r, "local part asked but not answered");
        case F_GOT:
            if (on_local(r, f, q))
                goto ask;
            break;
        case F_EXPAND:
            if (f->next < f->ntargets) {
                const char *t = f->targets[f->next++];

                push_target(r, f, t);
            } else {
                pop(r);
            }
            break;
        }
    }
    prefetch_clear(&r->pre);
    r->verdict.rcpt = r->rcpt;
    r->verdict.mailboxes = (const char *const *)r->mailboxes.v;
    r->verdict.nmailboxes = r->mailboxes.n;
    r->verdict.forward = (const char *const *)r->forward.v;
    r->verdict.nforward = r->forward.n;
    return GUARD_Q_DONE;
ask:
    /* A prefetch not used by now was about a domain that is not ours. */
    prefetch_clear(&r->pre);
    r->asked = q->kind;
    r->nqueries++;
    return q->kind;
}

void
guard_resolve_domain_answer(guard_resolve_t *r,
                            const struct guard_domain_info *info)
{
    struct frame *f = top(r);
    struct dom *d;

    if (r->asked != GUARD_Q_DOMAIN || f == NULL)
        misuse(r, "domain answer without a question");
    r->asked = GUARD_Q_DONE;
    r->doms = xrealloc(r->doms, (r->ndoms + 1) * sizeof(*r->doms));
    d = &r->doms[r->ndoms++];
    d->name = xstrdup(f->domain);
    d->ours = info->ours;
    d->disabled = info->disabled;
    d->catchall = info->catchall ? xstrdup(info->catchall) : NULL;
    /* The question named f->lookup: its facts may come along. */
    r->pre.ok = true;
}

void
guard_resolve_local_answer(guard_resolve_t *r,
                           const struct guard_local_info *info)
{
    struct frame *f = top(r);

    if (r->pre.ok && r->asked == GUARD_Q_DONE && f != NULL) {
        /* Fetched in the round of the domain question, which named the
         * top frame's local part. */
        r->pre.ok = false;
        r->pre.got = true;
        r->pre.domain = xstrdup(f->domain);
        r->pre.local = xstrdup(f->lookup);
        r->pre.account = info->account;
        r->pre.disabled = info->disabled;
        copy_targets(info, &r->pre.targets, &r->pre.ntargets);
        return;
    }
    if (r->asked != GUARD_Q_LOCAL || f == NULL || f->state != F_LOCAL)
        misuse(r, "local answer without a question");
    r->asked = GUARD_Q_DONE;
    f->account = info->account;
    f->disabled = info->disabled;
    copy_targets(info, &f->targets, &f->ntargets);
    f->state = F_GOT;
}

const struct guard_verdict *
guard_resolve_verdict(const guard_resolve_t *r)
{
    return &r->verdict;
}

int
guard_resolve_queries(const guard_resolve_t *r)
{
    return r->nqueries;
}
