/*
 * fuzz_imap_server.c - libFuzzer target for the IMAP server engine.
 *
 * The first three bytes choose the session: byte 0 the option set,
 * whether decisions are answered at once or only after more input, and
 * after how many events the caller closes the session itself (never when
 * 0); byte 1 which decisions are refused; byte 2 seeds the points where
 * the rest is cut into reads and the moments the caller pushes
 * unsolicited responses. The rest is what the client sends. Decisions are
 * answered by a fixed policy that writes every kind of untagged response
 * (FETCH with literals and partials, LIST, STATUS, SEARCH, EXPUNGE...),
 * STARTTLS is "handshaken" at once (the rest of that read dropped, as the
 * mailbox actor does).
 *
 * Whatever the bytes, the engine must not crash, leak or grow past its
 * bounds, and:
 *   - its output is whole responses: lines ending in CRLF that start with
 *     "* ", "+ " or a tag and OK, NO or BAD, with literals "{n}" CRLF and
 *     n octets inside them, and nothing but printable US-ASCII outside
 *     literals;
 *   - every tag it writes was sent by the client at the start of a line,
 *     and a decision's completion carries the decision's tag;
 *   - no EXPUNGE goes out while a FETCH, STORE or SEARCH is answered, nor
 *     when the caller writes one with no command in progress;
 *   - commands come only in a state that allows them, APPEND's message is
 *     never over max_append;
 *   - lib/imap_mime.h, run on each APPEND's message, makes ENVELOPE and
 *     BODYSTRUCTURE values that are balanced lists of well-formed atoms,
 *     strings and literals, of bounded size, and sections that lie inside
 *     the message;
 *   - it gives at most a few events per input byte and never stalls;
 *   - nothing comes after LOGOUT or CLOSE.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/imap_mime.h"
#include "lib/imap_server.h"

#define MAX_APPEND 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    imap_server_t *srv;
    const uint8_t *in; /* the client's bytes, for the tag check */
    size_t in_len;
    buf_t out;
    size_t parsed;   /* out[0..parsed) checked */
    uint8_t reject;  /* bit i: refuse decision number i mod 8 */
    bool delay;      /* answer after the next read instead of at once */
    size_t close_at; /* imap_server_close() after this many events, or 0 */
    unsigned ndec;
    size_t nevents, fed;
    bool ended;          /* LOGOUT or CLOSE seen */
    bool tls;            /* STARTTLS seen: drop the rest of the read */
    bool forbid_expunge; /* a FETCH, STORE or SEARCH is being answered */
    uint32_t seed;
    const struct imap_event *pending;
    /* Where the client's stream resumed after STARTTLS: a command may
     * start there (what was read with STARTTLS was dropped). */
    size_t restart[16];
    int nrestart;
};

static void
fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_imap_server: %s: %.200s\n", what,
            detail ? detail : "-");
    abort();
}

static uint32_t
next_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Whether i is where a line of the client's may start. */
static bool
line_start(const struct fz *f, size_t i)
{
    if (i == 0 || f->in[i - 1] == '\n')
        return true;
    for (int k = 0; k < f->nrestart; k++)
        if (f->restart[k] == i)
            return true;
    return false;
}

/* Whether the client sent the tag at the start of a line (alone on it
 * too: "a\r\n" gets "a BAD Missing command"). */
static bool
tag_sent(const struct fz *f, const char *tag, size_t n)
{
    for (size_t i = 0; i + n < f->in_len; i++)
        if (memcmp(f->in + i, tag, n) == 0 && strchr(" \r\n", f->in[i + n]) &&
            line_start(f, i))
            return true;
    return false;
}

/* Checks the complete responses added to the output since last time. */
static void
check_output(struct fz *f)
{
    const char *base = f->out.data ? f->out.data : "";
    const char *p = base + f->parsed, *end = base + f->out.len;
    bool start = true;
    const char *resp = p;

    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2), *b;
        size_t n;

        if (eol == NULL)
            fail("partial response line", p);
        n = (size_t)(eol - p);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
                fail("octet outside a literal not printable", p);
        if (start) {
            const char *sp = memchr(p, ' ', n);

            if (sp == NULL || sp == p)
                fail("response without a tag", p);
            if (p[0] == '*' && sp == p + 1) {
                if (f->forbid_expunge && n > 10 &&
                    memcmp(p + n - 8, " EXPUNGE", 8) == 0 &&
                    strspn(p + 2, "0123456789") == n - 10)
                    fail("EXPUNGE during FETCH, STORE or SEARCH", p);
            } else if (p[0] == '+' && sp == p + 1) {
                /* a continuation request */
            } else {
                size_t tl = (size_t)(sp - p);

                if (!tag_sent(f, p, tl))
                    fail("tag the client never sent", p);
                if (strncmp(sp, " OK ", 4) != 0 &&
                    strncmp(sp, " NO ", 4) != 0 && strncmp(sp, " BAD ", 5) != 0)
                    fail("tagged response without OK, NO or BAD", p);
            }
        }
        /* A line ending in "{n}" announces a literal, whatever came
         * before it; "}" ends some atoms too. */
        b = p + n - 1;
        if (n >= 3 && *b == '}') {
            while (b > p && b[-1] >= '0' && b[-1] <= '9')
                b--;
        }
        if (n >= 3 && p[n - 1] == '}' && b > p && b[-1] == '{' &&
            b < p + n - 1) {
            unsigned long long lit;

            lit = strtoull(b, NULL, 10);
            p = eol + 2;
            if ((unsigned long long)(end - p) < lit)
                fail("literal cut short", p);
            p += lit;
            start = false;
            continue;
        }
        p = eol + 2;
        start = true;
        resp = p;
    }
    if (!start)
        fail("output ends inside a response", resp);
    f->parsed = f->out.len;
}

static void
take_output(struct fz *f)
{
    size_t n;
    const char *o = imap_server_output(f->srv, &n);

    buf_add(&f->out, o, n);
    imap_server_output_done(f->srv, n);
    check_output(f);
}

static const char fetch_msg[] =
    "Subject: fuzz\r\nFrom: a@b.test\r\n\r\nbody\r\n";

static void
answer_fetch(struct fz *f, const struct imap_cmd *c)
{
    for (uint32_t seq = 1; seq <= 3; seq++) {
        if (!imap_parse_seqset_contains(&c->fetch.set, c->uid ? seq + 9 : seq,
                                        c->uid ? 12 : 3))
            continue;
        if (seq == 2)
            /* An expunge found meanwhile: it must be held. */
            imap_server_expunge(f->srv, 3);
        imap_server_fetch_begin(f->srv, seq);
        for (size_t i = 0; i < c->fetch.natt; i++) {
            const struct imap_fetch_att *a = &c->fetch.att[i];

            switch (a->item) {
            case IMAP_FETCH_UID:
                imap_server_fetch_uid(f->srv, seq + 9);
                break;
            case IMAP_FETCH_FLAGS:
                imap_server_fetch_flags(f->srv, "\\Seen $Fuzz \\Bad\\ (x");
                break;
            case IMAP_FETCH_INTERNALDATE:
                imap_server_fetch_internaldate(f->srv, (time_t)f->seed * 1000,
                                               (int)(f->seed % 3000) - 1500);
                break;
            case IMAP_FETCH_RFC822_SIZE:
                imap_server_fetch_size(f->srv, sizeof(fetch_msg) - 1);
                break;
            case IMAP_FETCH_ENVELOPE:
            case IMAP_FETCH_BODY:
            case IMAP_FETCH_BODYSTRUCTURE:
                imap_server_fetch_item(f->srv, "ENVELOPE", "(NIL \"x\")", 9);
                break;
            default:
                imap_server_fetch_section(f->srv, a,
                                          a->sec.nparts > 2 ? NULL : fetch_msg,
                                          sizeof(fetch_msg) - 1);
                break;
            }
        }
        imap_server_fetch_end(f->srv);
    }
}

/* Whether v[0..n) is one well-formed IMAP value: a list of lists, NIL,
 * numbers, atoms, quoted strings and literals (RFC 3501 9). */
static void
check_value(const char *v, size_t n, const char *what)
{
    size_t i = 0;
    int depth = 0;

    while (i < n) {
        char c = v[i];

        if (c == '(') {
            depth++;
            i++;
        } else if (c == ')') {
            if (--depth < 0)
                fail("unbalanced list", what);
            i++;
        } else if (c == ' ') {
            i++;
        } else if (c == '"') {
            for (i++; i < n && v[i] != '"'; i++) {
                if (v[i] == '\\') {
                    i++;
                    if (i >= n || (v[i] != '"' && v[i] != '\\'))
                        fail("bad escape in a quoted string", what);
                } else if ((unsigned char)v[i] < 0x20 ||
                           (unsigned char)v[i] > 0x7e) {
                    fail("bad octet in a quoted string", what);
                }
            }
            if (i >= n)
                fail("unterminated quoted string", what);
            i++;
        } else if (c == '{') {
            unsigned long long lit = 0;

            for (i++; i < n && v[i] >= '0' && v[i] <= '9'; i++)
                lit = lit * 10 + (unsigned long long)(v[i] - '0');
            if (n - i < 3 || memcmp(v + i, "}\r\n", 3) != 0 || n - i - 3 < lit)
                fail("bad literal", what);
            i += 3 + lit;
        } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
            while (i < n && ((v[i] >= 'A' && v[i] <= 'Z') ||
                             (v[i] >= '0' && v[i] <= '9')))
                i++;
        } else {
            fail("unexpected octet in a value", what);
        }
        if (depth == 0 && i < n)
            fail("more than one value", what);
    }
    if (depth != 0)
        fail("unbalanced list", what);
}

/* ENVELOPE, BODY, BODYSTRUCTURE and some sections of an APPEND's
 * message, as a FETCH response. */
static void
answer_mime(struct fz *f, const char *msg, size_t len)
{
    static const char *const from_subject[] = {"SUBJECT", "FROM"};
    static const char *const to[] = {"TO"};
    static const struct imap_section secs[] = {
        {.spec = IMAP_SEC_WHOLE},
        {.spec = IMAP_SEC_TEXT},
        {.part = {1}, .nparts = 1, .spec = IMAP_SEC_MIME},
        {.part = {2}, .nparts = 1, .spec = IMAP_SEC_WHOLE},
        {.part = {1, 2}, .nparts = 2, .spec = IMAP_SEC_WHOLE},
        {.part = {2, 1}, .nparts = 2, .spec = IMAP_SEC_HEADER},
        {.part = {1, 1, 1}, .nparts = 3, .spec = IMAP_SEC_TEXT},
        {.spec = IMAP_SEC_FIELDS, .fields = {from_subject, 2}},
        {.part = {3},
         .nparts = 1,
         .spec = IMAP_SEC_FIELDS_NOT,
         .fields = {to, 1}},
    };
    imap_mime_t *m = imap_mime_parse(msg, len);
    buf_t v = BUF_INIT, scratch = BUF_INIT;
    size_t bound = 16 * len + 400 * IMAP_MIME_PARTS_MAX;

    if (imap_mime_size(m) != len || imap_mime_header_size(m) > len)
        fail("imap_mime sizes", NULL);
    imap_server_fetch_begin(f->srv, 1);
    imap_mime_envelope(m, &v);
    check_value(v.data, v.len, "ENVELOPE");
    imap_server_fetch_item(f->srv, "ENVELOPE", v.data, v.len);
    buf_reset(&v);
    imap_mime_bodystructure(m, true, &v);
    if (v.len > bound)
        fail("BODYSTRUCTURE too large", NULL);
    check_value(v.data, v.len, "BODYSTRUCTURE");
    imap_server_fetch_item(f->srv, "BODYSTRUCTURE", v.data, v.len);
    buf_reset(&v);
    imap_mime_bodystructure(m, false, &v);
    check_value(v.data, v.len, "BODY");
    imap_server_fetch_item(f->srv, "BODY", v.data, v.len);
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++) {
        struct imap_fetch_att att = {.item = IMAP_FETCH_SECTION,
                                     .sec = secs[i]};
        const char *d;
        size_t n;

        if (!imap_mime_section(m, &secs[i], &scratch, &d, &n)) {
            imap_server_fetch_section(f->srv, &att, NULL, 0);
            continue;
        }
        if (!(d >= msg && d + n <= msg + len) &&
            !(d == scratch.data && n == scratch.len))
            fail("section outside the message", NULL);
        imap_server_fetch_section(f->srv, &att, d, n);
    }
    imap_server_fetch_end(f->srv);
    imap_mime_destroy(&m);
    buf_free(&v);
    buf_free(&scratch);
}

static enum imap_status
refusal(struct fz *f, bool no)
{
    if (!no)
        return IMAP_OK;
    switch (f->ndec % 11) {
    case 0:
        return IMAP_BYE;
    case 1:
    case 2:
        return IMAP_BAD;
    default:
        return IMAP_NO;
    }
}

static void
answer(struct fz *f, const struct imap_event *ev)
{
    bool no = (f->reject >> (f->ndec++ % 8)) & 1;
    const struct imap_cmd *c = ev->cmd;
    enum imap_status st = refusal(f, no);
    static const uint32_t nums[] = {1, 2, 4294967295u};
    static const char *const idp[] = {"name", "fuzz", "x", NULL};
    const struct imap_status_values sv = {1, 2, 3, 4, 5};
    char tag[256];
    size_t before;

    if (ev->type == IMAP_EV_CONNECT) {
        st = f->reject == 0xff   ? IMAP_BYE
             : f->reject == 0xfe ? IMAP_PREAUTH
                                 : IMAP_OK;
        imap_server_complete(f->srv, st, NULL, "fuzz");
        return;
    }
    if (ev->type == IMAP_EV_LOGIN) {
        if (ev->login.user == NULL || ev->login.pass == NULL ||
            ev->login.authzid == NULL)
            fail("LOGIN without credentials", NULL);
        imap_server_complete(f->srv, st, NULL, NULL);
        return;
    }
    if (ev->type != IMAP_EV_COMMAND)
        fail("answering a news event", NULL);
    snprintf(tag, sizeof(tag), "%s ", c->tag);
    switch (c->id) {
    case IMAP_CMD_SELECT:
    case IMAP_CMD_EXAMINE:
        imap_server_flags(f->srv, "\\Seen \\Deleted");
        imap_server_exists(f->srv, 3);
        imap_server_recent(f->srv, 0);
        imap_server_untagged_status(f->srv, IMAP_OK, "UIDVALIDITY 7", "x");
        break;
    case IMAP_CMD_FETCH:
        answer_fetch(f, c);
        break;
    case IMAP_CMD_STORE:
        if (!c->store.silent) {
            imap_server_fetch_begin(f->srv, 1);
            imap_server_fetch_flags(
                f->srv, c->store.flags.n ? c->store.flags.v[0] : "");
            imap_server_fetch_end(f->srv);
        }
        imap_server_expunge(f->srv, 1);
        break;
    case IMAP_CMD_SEARCH:
        imap_server_expunge(f->srv, 2);
        imap_server_search(f->srv, nums, 3);
        break;
    case IMAP_CMD_MOVE:
    case IMAP_CMD_EXPUNGE:
        imap_server_untagged_status(f->srv, IMAP_OK, "COPYUID 1 2 3]", "m");
        imap_server_expunge(f->srv, 1);
        break;
    case IMAP_CMD_LIST:
    case IMAP_CMD_LSUB:
        imap_server_list(f->srv, c->id == IMAP_CMD_LSUB, "\\Noselect \\x\"",
                         f->ndec & 1 ? '/' : '\0', c->list.pattern);
        imap_server_list(f->srv, false, NULL, '"', c->list.ref);
        break;
    case IMAP_CMD_STATUS:
        imap_server_status(f->srv, c->status.mailbox, c->status.items, &sv);
        break;
    case IMAP_CMD_NAMESPACE:
        imap_server_namespace(f->srv, "\"\\", '\\');
        break;
    case IMAP_CMD_ID:
        imap_server_id(f->srv, c->idparams.n ? c->idparams.v : idp,
                       c->idparams.n ? c->idparams.n : 4);
        break;
    case IMAP_CMD_ENABLE:
        imap_server_enabled(f->srv, c->enable.v, c->enable.n);
        break;
    case IMAP_CMD_APPEND:
        if (c->append.len > MAX_APPEND)
            fail("APPEND over max_append", NULL);
        imap_server_untagged(f->srv, "OK \r\n\x01 sanitised");
        answer_mime(f, c->append.msg, c->append.len);
        break;
    default:
        break;
    }
    before = f->out.len;
    imap_server_complete(f->srv, st, no ? "CODE]x" : NULL,
                         no ? "\x7fno" : NULL);
    take_output(f);
    f->forbid_expunge = false;
    /* The completion carries the command's tag (IDLE's OK is "+ "). */
    if (st != IMAP_BYE && !(c->id == IMAP_CMD_IDLE && st == IMAP_OK)) {
        const char *o = f->out.data ? f->out.data + before : "";
        size_t n = f->out.len - before, tl = strlen(tag);
        char nltag[260];

        snprintf(nltag, sizeof(nltag), "\r\n%s", tag);
        if (!(n >= tl && memcmp(o, tag, tl) == 0) &&
            memmem(o, n, nltag, tl + 2) == NULL)
            fail("completion without the command's tag", o);
    }
}

/* Checks the state allows the command handed out (RFC 3501 6). */
static void
check_state(struct fz *f, const struct imap_event *ev)
{
    enum imap_state st = imap_server_state(f->srv);
    enum imap_cmd_id id = ev->cmd->id;

    if (ev->type == IMAP_EV_LOGIN) {
        if (st != IMAP_STATE_NOT_AUTH)
            fail("LOGIN when authenticated", NULL);
        return;
    }
    if (st == IMAP_STATE_NOT_AUTH && id >= IMAP_CMD_SELECT)
        fail("command before authentication", imap_parse_cmd_name(id));
    if (st != IMAP_STATE_SELECTED && id >= IMAP_CMD_CHECK)
        fail("command with no mailbox selected", imap_parse_cmd_name(id));
    if (st == IMAP_STATE_LOGOUT)
        fail("command after logout", NULL);
}

/* The caller writes an update at a random moment. */
static void
push_unsolicited(struct fz *f)
{
    uint32_t r = next_rand(&f->seed);
    size_t before;

    if (r % 5 != 0)
        return;
    take_output(f);
    before = f->out.len;
    switch (r / 5 % 4) {
    case 0:
        imap_server_exists(f->srv, r >> 8);
        break;
    case 1:
        imap_server_fetch_begin(f->srv, 1);
        imap_server_fetch_flags(f->srv, "\\Flagged");
        imap_server_fetch_end(f->srv);
        break;
    default: {
        bool ok = imap_server_expunge_ok(f->srv);
        bool in_cmd = f->pending != NULL || imap_server_idling(f->srv);

        if (ok && !in_cmd)
            fail("expunge_ok with no command in progress", NULL);
        imap_server_expunge(f->srv, 1 + r % 3);
        take_output(f);
        if (!in_cmd && f->out.len != before)
            fail("EXPUNGE sent with no command in progress", NULL);
        if (ok && f->out.len == before)
            fail("expunge_ok, yet the EXPUNGE was held", NULL);
        break;
    }
    }
    take_output(f);
}

/* Takes events until the engine wants input; answers decisions at once,
 * or leaves the first one pending when f->delay says so. */
static void
drain(struct fz *f)
{
    const struct imap_event *ev;

    if (f->pending) {
        answer(f, f->pending);
        f->pending = NULL;
    }
    while ((ev = imap_server_next(f->srv))->type != IMAP_EV_NONE) {
        f->nevents++;
        if (f->nevents > 8 * f->fed + 16)
            fail("too many events for the input", NULL);
        if (f->ended)
            fail("event after LOGOUT or CLOSE", NULL);
        switch (ev->type) {
        case IMAP_EV_COMMAND:
            /* RFC 3501 7.4.1: none from here to the completion; what
             * came before (commands the engine answered) may have one. */
            take_output(f);
            f->forbid_expunge =
                !ev->cmd->uid && (ev->cmd->id == IMAP_CMD_FETCH ||
                                  ev->cmd->id == IMAP_CMD_STORE ||
                                  ev->cmd->id == IMAP_CMD_SEARCH);
            /* fall through */
        case IMAP_EV_LOGIN:
            check_state(f, ev);
            break;
        case IMAP_EV_STARTTLS:
            f->tls = true;
            break;
        case IMAP_EV_LOGOUT:
        case IMAP_EV_CLOSE:
            f->ended = true;
            if (!imap_server_done(f->srv))
                fail("LOGOUT/CLOSE but not done", NULL);
            break;
        default:
            break;
        }
        if (f->close_at && f->nevents == f->close_at && !f->ended &&
            ev->type >= IMAP_EV_IDLE_DONE) {
            /* An autologout timer, say; only after a news event. */
            imap_server_close(f->srv, "timeout");
            take_output(f);
            continue;
        }
        if (ev->type >= IMAP_EV_CONNECT && ev->type <= IMAP_EV_COMMAND) {
            if (f->delay && ev->type != IMAP_EV_CONNECT) {
                f->pending = ev;
                take_output(f);
                push_unsolicited(f);
                return;
            }
            answer(f, ev);
        }
        take_output(f);
        if (!f->ended)
            push_unsolicited(f);
    }
    take_output(f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct imap_server_opts o = {
        .hostname = "fuzz.test",
        .max_line = 1024,
        .max_literal = 1024,
        .max_command = 4096,
        .max_append = MAX_APPEND,
        .max_errors = 30,
    };
    struct fz f;
    size_t pos = 3;
    int stuck = 0;

    if (size < 3)
        return 0;
    memset(&f, 0, sizeof(f));
    switch (data[0] & 3) {
    case 0:
        break;
    case 1:
        o.starttls = o.login_needs_tls = true;
        break;
    case 2:
        o.tls_active = o.login_needs_tls = true;
        break;
    default:
        o.max_line = o.max_literal = o.max_command = 0; /* defaults */
        break;
    }
    f.delay = data[0] & 4;
    f.close_at = data[0] >> 3;
    f.reject = data[1];
    f.seed = (uint32_t)data[2] * 2654435761u | 1;
    f.in = data + 3;
    f.in_len = size - 3;
    f.srv = imap_server_new(&o);
    drain(&f);

    while (pos < size) {
        size_t want = 1 + next_rand(&f.seed) % 64, took;

        if (want > size - pos)
            want = size - pos;
        if (next_rand(&f.seed) % 8 == 0)
            want = size - pos; /* now and then all the rest at once */
        took = imap_server_input(f.srv, data + pos, want);
        f.fed += took;
        pos += took;
        drain(&f);
        if (f.tls) {
            /* The actor drops the rest of its read, then shakes hands. */
            f.tls = false;
            pos += next_rand(&f.seed) % 4 == 0 ? 0 : want - took;
            if (pos > size)
                pos = size;
            if (f.nrestart == 16)
                fail("too many STARTTLS", NULL);
            f.restart[f.nrestart++] = pos - 3;
            imap_server_tls_started(f.srv);
            drain(&f);
            continue;
        }
        stuck = took == 0 ? stuck + 1 : 0;
        if (stuck > 3)
            fail("stalled: answered and drained, yet no input taken", NULL);
    }
    drain(&f);
    if (f.pending) {
        answer(&f, f.pending);
        f.pending = NULL;
        drain(&f);
    }
    take_output(&f);
    imap_server_destroy(&f.srv);
    buf_free(&f.out);
    return 0;
}
