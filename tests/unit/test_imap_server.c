/*
 * test_imap_server.c - the IMAP server engine (lib/imap_server.h), driven
 * by scripted sessions: bytes fed (whole, byte by byte, or in odd slices,
 * always with the same output), decisions answered by a fixed policy, the
 * output and events written down and compared with what the RFCs want.
 *
 * A script is a list of segments; a segment after STARTTLS is what the
 * client sends once TLS is up (the rest of the segment that held STARTTLS
 * is dropped, as the mailbox actor must). The policy: LOGIN and PLAIN
 * accept user/pass, refuse others, and say BYE to user "bye"; SELECT and
 * EXAMINE open INBOX (3 messages, UIDs 10 to 12, UIDNEXT 13) and refuse
 * others; FETCH answers from one fixed message; SEARCH finds 1 and 3;
 * APPEND refuses a message holding "REJECT"; the rest say OK (see
 * answer()).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "lib/buf.h"
#include "lib/imap_mime.h"
#include "lib/imap_server.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Option sets a script can ask for. */
enum { O_PLAIN, O_STARTTLS, O_IMAPS, O_SMALL };

static struct imap_server_opts
opts_for(int kind)
{
    struct imap_server_opts o = {.hostname = "imap.test"};

    switch (kind) {
    case O_STARTTLS:
        o.starttls = o.login_needs_tls = true;
        break;
    case O_IMAPS:
        o.tls_active = o.login_needs_tls = true;
        break;
    case O_SMALL:
        o.max_line = 1024;
        o.max_literal = 1024;
        o.max_command = 3000;
        o.max_append = 4096;
        o.max_errors = 5;
        break;
    }
    return o;
}

#define MSG_HDR "Subject: hi\r\nFrom: a@b.test\r\n\r\n"
#define MSG_BODY "hello\r\n"
#define MSG MSG_HDR MSG_BODY

struct run {
    buf_t out;    /* every byte the engine queued */
    buf_t ev;     /* event names, space-separated */
    buf_t detail; /* one line per event with its fields */
    bool tls_restart;
    imap_server_t *srv;
};

static const char *
ev_name(enum imap_event_type t)
{
    static const char *const names[] = {
        "NONE",      "CONNECT",  "LOGIN",  "COMMAND",
        "IDLE_DONE", "STARTTLS", "LOGOUT", "CLOSE",
    };

    return names[t];
}

static void
take_output(struct run *r)
{
    size_t n;
    const char *out = imap_server_output(r->srv, &n);

    buf_add(&r->out, out, n);
    imap_server_output_done(r->srv, n);
}

static void
answer_fetch(imap_server_t *srv, const struct imap_cmd *c)
{
    static const uint32_t uids[] = {10, 11, 12};

    for (uint32_t seq = 1; seq <= 3; seq++) {
        uint32_t id = c->uid ? uids[seq - 1] : seq;

        if (!imap_parse_seqset_contains(&c->fetch.set, id, c->uid ? 12 : 3))
            continue;
        imap_server_fetch_begin(srv, seq);
        for (size_t i = 0; i < c->fetch.natt; i++) {
            const struct imap_fetch_att *a = &c->fetch.att[i];
            const char *d = MSG;

            switch (a->item) {
            case IMAP_FETCH_UID:
                imap_server_fetch_uid(srv, uids[seq - 1]);
                break;
            case IMAP_FETCH_FLAGS:
                imap_server_fetch_flags(srv, "\\Seen");
                break;
            case IMAP_FETCH_INTERNALDATE:
                imap_server_fetch_internaldate(srv, 837596665, -420);
                break;
            case IMAP_FETCH_RFC822_SIZE:
                imap_server_fetch_size(srv, strlen(MSG));
                break;
            case IMAP_FETCH_ENVELOPE:
                imap_server_fetch_item(srv, "ENVELOPE", "(NIL \"hi\")", 10);
                break;
            case IMAP_FETCH_BODY:
            case IMAP_FETCH_BODYSTRUCTURE:
                imap_server_fetch_item(
                    srv, a->item == IMAP_FETCH_BODY ? "BODY" : "BODYSTRUCTURE",
                    "(\"TEXT\" \"PLAIN\")", 16);
                break;
            case IMAP_FETCH_RFC822_HEADER:
                imap_server_fetch_section(srv, a, MSG_HDR, strlen(MSG_HDR));
                break;
            case IMAP_FETCH_RFC822_TEXT:
                imap_server_fetch_section(srv, a, MSG_BODY, strlen(MSG_BODY));
                break;
            case IMAP_FETCH_RFC822:
            case IMAP_FETCH_SECTION:
                if (a->sec.nparts > 1) {
                    imap_server_fetch_section(srv, a, NULL, 0);
                    break;
                }
                if (a->sec.spec == IMAP_SEC_HEADER)
                    d = MSG_HDR;
                else if (a->sec.spec == IMAP_SEC_TEXT)
                    d = MSG_BODY;
                else if (a->sec.spec == IMAP_SEC_FIELDS)
                    d = "Subject: hi\r\n\r\n";
                imap_server_fetch_section(srv, a, d, strlen(d));
                break;
            }
        }
        imap_server_fetch_end(srv);
    }
}

static void
answer_store(imap_server_t *srv, const struct imap_cmd *c)
{
    buf_t flags = BUF_INIT;

    for (size_t i = 0; i < c->store.flags.n; i++)
        buf_printf(&flags, "%s%s", i ? " " : "", c->store.flags.v[i]);
    if (!c->store.silent)
        for (uint32_t seq = 1; seq <= 3; seq++) {
            if (!imap_parse_seqset_contains(
                    &c->store.set, c->uid ? seq + 9 : seq, c->uid ? 12 : 3))
                continue;
            imap_server_fetch_begin(srv, seq);
            imap_server_fetch_flags(srv, flags.data);
            if (c->uid)
                imap_server_fetch_uid(srv, seq + 9);
            imap_server_fetch_end(srv);
        }
    buf_free(&flags);
}

/* The policy (see the top). */
static void
answer(imap_server_t *srv, const struct imap_event *ev)
{
    const struct imap_cmd *c = ev->cmd;
    static const uint32_t found[] = {1, 3};
    static const char *const id[] = {"name", "samotop", "os", NULL};
    const struct imap_status_values sv = {3, 1, 13, 42, 2};

    if (ev->type == IMAP_EV_CONNECT) {
        imap_server_complete(srv, IMAP_OK, NULL, NULL);
        return;
    }
    if (ev->type == IMAP_EV_LOGIN) {
        if (strcmp(ev->login.user, "bye") == 0)
            imap_server_complete(srv, IMAP_BYE, NULL, "Go away");
        else if (strcmp(ev->login.user, "user") == 0 &&
                 strcmp(ev->login.pass, "pass") == 0)
            imap_server_complete(srv, IMAP_OK, NULL, NULL);
        else
            imap_server_complete(srv, IMAP_NO, NULL, NULL);
        return;
    }
    switch (c->id) {
    case IMAP_CMD_SELECT:
    case IMAP_CMD_EXAMINE:
        if (strcmp(c->mailbox, "bye") == 0) {
            imap_server_complete(srv, IMAP_BYE, NULL, "Going away");
            return;
        }
        if (strcmp(c->mailbox, "INBOX") != 0) {
            imap_server_complete(srv, IMAP_NO, "NONEXISTENT",
                                 "No such mailbox");
            return;
        }
        imap_server_flags(srv, "\\Answered \\Flagged \\Deleted \\Seen "
                               "\\Draft");
        imap_server_exists(srv, 3);
        imap_server_recent(srv, 1);
        imap_server_untagged_status(srv, IMAP_OK, "UIDVALIDITY 42",
                                    "UIDs valid");
        imap_server_untagged_status(srv, IMAP_OK, "UIDNEXT 13",
                                    "Predicted next UID");
        break;
    case IMAP_CMD_FETCH:
        answer_fetch(srv, c);
        break;
    case IMAP_CMD_STORE:
        answer_store(srv, c);
        break;
    case IMAP_CMD_SEARCH:
        imap_server_search(srv, found, 2);
        break;
    case IMAP_CMD_COPY:
        imap_server_complete(srv, IMAP_OK, "COPYUID 42 10:11 20:21", NULL);
        return;
    case IMAP_CMD_MOVE:
        imap_server_untagged_status(srv, IMAP_OK, "COPYUID 42 10 20", "Moved");
        imap_server_expunge(srv, 1);
        break;
    case IMAP_CMD_EXPUNGE:
        imap_server_expunge(srv, 2);
        break;
    case IMAP_CMD_LIST:
        if (*c->list.pattern == '\0') {
            imap_server_list(srv, false, "\\Noselect", '/', "");
            break;
        }
        imap_server_list(srv, false, "\\HasNoChildren", '/', "INBOX");
        imap_server_list(srv, false, "\\HasNoChildren \\Sent", '/',
                         "Sent Items");
        break;
    case IMAP_CMD_LSUB:
        imap_server_list(srv, true, "", '/', "INBOX");
        break;
    case IMAP_CMD_STATUS:
        imap_server_status(srv, c->status.mailbox, c->status.items, &sv);
        break;
    case IMAP_CMD_APPEND:
        if (memmem(c->append.msg, c->append.len, "REJECT", 6))
            imap_server_complete(srv, IMAP_NO, "OVERQUOTA", "Over quota");
        else
            imap_server_complete(srv, IMAP_OK, "APPENDUID 42 13", NULL);
        return;
    case IMAP_CMD_NAMESPACE:
        imap_server_namespace(srv, "", '/');
        break;
    case IMAP_CMD_ID:
        imap_server_id(srv, id, 4);
        break;
    case IMAP_CMD_ENABLE:
        imap_server_enabled(srv, NULL, 0);
        break;
    case IMAP_CMD_CREATE:
        if (strcmp(c->mailbox, "bad") == 0) {
            imap_server_complete(srv, IMAP_NO, "ALREADYEXISTS", NULL);
            return;
        }
        break;
    case IMAP_CMD_DELETE:
        if (strcmp(c->mailbox, "bad") == 0) {
            imap_server_complete(srv, IMAP_BAD, NULL, "Caller says BAD");
            return;
        }
        break;
    default:
        break;
    }
    imap_server_complete(srv, IMAP_OK, NULL, NULL);
}

static void
note(struct run *r, const struct imap_event *ev)
{
    const struct imap_cmd *c = ev->cmd;

    buf_printf(&r->ev, "%s%s", r->ev.len ? " " : "", ev_name(ev->type));
    switch (ev->type) {
    case IMAP_EV_LOGIN:
        buf_printf(&r->detail,
                   "LOGIN tag=%s mech=%s authzid=<%s> "
                   "user=<%s> pass=<%s>\n",
                   c->tag, ev->login.mech ? ev->login.mech : "-",
                   ev->login.authzid, ev->login.user, ev->login.pass);
        break;
    case IMAP_EV_COMMAND:
        buf_printf(&r->detail, "COMMAND %s%s tag=%s", c->uid ? "UID " : "",
                   imap_parse_cmd_name(c->id), c->tag);
        if (c->id == IMAP_CMD_APPEND) {
            buf_printf(&r->detail, " mbox=%s len=%zu [", c->append.mailbox,
                       c->append.len);
            buf_add(&r->detail, c->append.msg, c->append.len);
            buf_addc(&r->detail, ']');
        }
        buf_addc(&r->detail, '\n');
        break;
    default:
        buf_printf(&r->detail, "%s\n", ev_name(ev->type));
        break;
    }
}

/* Runs the engine until it wants input, answering by the policy. */
static void
drain(struct run *r)
{
    const struct imap_event *ev;

    while ((ev = imap_server_next(r->srv))->type != IMAP_EV_NONE) {
        note(r, ev);
        if (ev->type == IMAP_EV_STARTTLS)
            r->tls_restart = true;
        else if (ev->type <= IMAP_EV_COMMAND)
            answer(r->srv, ev);
        take_output(r);
    }
    take_output(r);
}

static void
feed(struct run *r, const char *data, size_t len, size_t chunk)
{
    size_t pos = 0;
    int stuck = 0;

    while (pos < len) {
        size_t n = chunk && chunk < len - pos ? chunk : len - pos;
        size_t took = imap_server_input(r->srv, data + pos, n);

        pos += took;
        drain(r);
        if (r->tls_restart) {
            /* The actor drops what it read but did not feed, shakes
             * hands, then says so. */
            r->tls_restart = false;
            imap_server_tls_started(r->srv);
            return;
        }
        stuck = took == 0 ? stuck + 1 : 0;
        ck_assert_msg(stuck < 3, "engine stalls at %zu of %zu", pos, len);
    }
}

static void
run_start(struct run *r, int kind)
{
    struct imap_server_opts o = opts_for(kind);

    memset(r, 0, sizeof(*r));
    r->srv = imap_server_new(&o);
    drain(r);
}

static void
run_free(struct run *r)
{
    imap_server_destroy(&r->srv);
    ck_assert(r->srv == NULL);
    buf_free(&r->out);
    buf_free(&r->ev);
    buf_free(&r->detail);
}

static void
run_script(struct run *r, int kind, const char *const *segs, size_t chunk)
{
    run_start(r, kind);
    for (int i = 0; segs[i]; i++)
        feed(r, segs[i], strlen(segs[i]), chunk);
    drain(r);
}

/*
 * Checks that the output is a run of well-formed responses: lines ending
 * in CRLF that start with "* ", "+ " or a tag and a space, literals
 * "{n}" CRLF and n octets inside them.
 */
static void
check_wellformed(const buf_t *out)
{
    const char *p = out->data ? out->data : "", *end = p + out->len;
    bool start = true;

    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t n;

        ck_assert_msg(eol != NULL, "output ends in a partial line: %s", p);
        n = (size_t)(eol - p);
        if (start)
            ck_assert_msg(n >= 2 && memchr(p, ' ', n) && p[0] != ' ',
                          "bad response start: %.*s", (int)n, p);
        ck_assert_msg(memchr(p, '\n', n) == NULL && memchr(p, '\r', n) == NULL,
                      "bare CR or LF in a response");
        if (n >= 3 && p[n - 1] == '}') {
            const char *b = p + n - 1;
            unsigned long lit;

            while (b > p && b[-1] >= '0' && b[-1] <= '9')
                b--;
            ck_assert_msg(b > p && b[-1] == '{', "bad literal announcement");
            lit = strtoul(b, NULL, 10);
            p = eol + 2;
            ck_assert_msg((size_t)(end - p) >= lit, "literal cut short");
            p += lit;
            start = false;
            continue;
        }
        p = eol + 2;
        start = true;
    }
    ck_assert_msg(start, "output ends inside a response");
}

#define CAPS "IMAP4rev1 LITERAL+ IDLE UIDPLUS MOVE NAMESPACE ID ENABLE UNSELECT"
#define GREET_PLAIN                                                            \
    "* OK [CAPABILITY " CAPS " AUTH=PLAIN SASL-IR] imap.test IMAP4rev1 "       \
    "ready\r\n"
#define GREET_STARTTLS                                                         \
    "* OK [CAPABILITY " CAPS " STARTTLS LOGINDISABLED] imap.test IMAP4rev1 "   \
    "ready\r\n"
#define LOGIN "a LOGIN user pass\r\n"
#define LOGGED "a OK [CAPABILITY " CAPS "] Logged in\r\n"
#define SELECT "b SELECT INBOX\r\n"
#define SELECTED                                                               \
    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"              \
    "* 3 EXISTS\r\n* 1 RECENT\r\n* OK [UIDVALIDITY 42] UIDs valid\r\n"         \
    "* OK [UIDNEXT 13] Predicted next UID\r\n"                                 \
    "b OK [READ-WRITE] SELECT completed\r\n"
#define IN LOGIN SELECT
#define INOUT LOGGED SELECTED
#define PLAIN_B64 "AHVzZXIAcGFzcw==" /* "\0user\0pass" */

/*
 * The scripted sessions: a label, the option set, the input segments, the
 * output wanted after the greeting, the events wanted (NULL: not checked)
 * and a fragment the event details must hold (NULL: none).
 */
static const struct script {
    const char *label;
    int kind;
    const char *in[5];
    const char *out, *events, *detail;
} scripts[] = {
    /* Any state (RFC 3501 6.1). */
    {"capability",
     O_PLAIN,
     {"a CAPABILITY\r\n"},
     "* CAPABILITY " CAPS " AUTH=PLAIN SASL-IR\r\na OK CAPABILITY "
     "completed\r\n",
     "CONNECT",
     NULL},
    {"noop",
     O_PLAIN,
     {"a NOOP\r\n"},
     "a OK NOOP completed\r\n",
     "CONNECT",
     NULL},
    {"logout",
     O_PLAIN,
     {"a LOGOUT\r\nb NOOP\r\n"},
     "* BYE imap.test IMAP4rev1 server logging out\r\na OK LOGOUT "
     "completed\r\n",
     "CONNECT LOGOUT",
     NULL},
    {"id before login",
     O_PLAIN,
     {"a ID NIL\r\n"},
     "* ID (\"name\" \"samotop\" \"os\" NIL)\r\na OK ID completed\r\n",
     "CONNECT COMMAND",
     "COMMAND ID tag=a"},

    /* Login (6.2.3). */
    {"login",
     O_PLAIN,
     {LOGIN},
     LOGGED,
     "CONNECT LOGIN",
     "LOGIN tag=a mech=- authzid=<> user=<user> pass=<pass>"},
    {"login refused",
     O_PLAIN,
     {"a LOGIN user nope\r\nb FETCH 1 FLAGS\r\n"},
     "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
     "b BAD Not authenticated\r\n",
     "CONNECT LOGIN",
     NULL},
    {"login literal",
     O_PLAIN,
     {"a LOGIN {4}\r\n", "user {4}\r\n", "pass\r\n"},
     "+ Ready for literal data\r\n+ Ready for literal data\r\n" LOGGED,
     "CONNECT LOGIN",
     "user=<user> pass=<pass>"},
    {"login literal+",
     O_PLAIN,
     {"a LOGIN {4+}\r\nuser {4+}\r\npass\r\n"},
     LOGGED,
     "CONNECT LOGIN",
     "user=<user> pass=<pass>"},
    {"login quoted",
     O_PLAIN,
     {"a LOGIN \"user\" \"pass\"\r\n"},
     LOGGED,
     "CONNECT LOGIN",
     NULL},
    {"login twice",
     O_PLAIN,
     {LOGIN "c LOGIN user pass\r\n"},
     LOGGED "c BAD Already authenticated\r\n",
     "CONNECT LOGIN",
     NULL},
    {"login bye",
     O_PLAIN,
     {"a LOGIN bye x\r\nb NOOP\r\n"},
     "* BYE Go away\r\n",
     "CONNECT LOGIN CLOSE",
     NULL},
    {"logindisabled",
     O_STARTTLS,
     {"a LOGIN user pass\r\n"},
     "a NO [PRIVACYREQUIRED] LOGIN disabled without TLS, use STARTTLS\r\n",
     "CONNECT",
     NULL},
    {"authenticate disabled",
     O_STARTTLS,
     {"a AUTHENTICATE PLAIN\r\n"},
     "a NO [PRIVACYREQUIRED] Authentication disabled without TLS, use "
     "STARTTLS\r\n",
     "CONNECT",
     NULL},
    {"imaps",
     O_IMAPS,
     {"a CAPABILITY\r\n" LOGIN},
     "* CAPABILITY " CAPS " AUTH=PLAIN SASL-IR\r\na OK CAPABILITY "
     "completed\r\n" LOGGED,
     "CONNECT LOGIN",
     NULL},

    /* AUTHENTICATE PLAIN (6.2.2, RFC 4616, RFC 4959). */
    {"authenticate",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN\r\n", PLAIN_B64 "\r\n"},
     "+ \r\n" LOGGED,
     "CONNECT LOGIN",
     "LOGIN tag=a mech=PLAIN authzid=<> user=<user> pass=<pass>"},
    {"authenticate ir",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN " PLAIN_B64 "\r\n"},
     LOGGED,
     "CONNECT LOGIN",
     "mech=PLAIN"},
    {"authenticate authzid",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN YWRtaW4AdXNlcgBwYXNz\r\n"},
     LOGGED,
     "CONNECT LOGIN",
     "authzid=<admin> user=<user>"},
    {"authenticate cancel",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN\r\n*\r\nb NOOP\r\n"},
     "+ \r\na BAD AUTHENTICATE cancelled\r\nb OK NOOP completed\r\n",
     "CONNECT",
     NULL},
    {"authenticate bad base64",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN\r\nnot base64!\r\n"},
     "+ \r\na BAD Invalid base64\r\n",
     "CONNECT",
     NULL},
    /* RFC 4648 3.5: "QR==" has unused bits set; only "QQ==" is "A". */
    {"authenticate non-canonical base64",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN QR==\r\n"},
     "a BAD Invalid base64\r\n",
     "CONNECT",
     NULL},
    {"authenticate bad plain",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN dXNlcgBwYXNz\r\n"},
     "a BAD Invalid PLAIN response\r\n",
     "CONNECT",
     NULL},
    {"authenticate empty ir",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN =\r\n"},
     "a BAD Invalid PLAIN response\r\n",
     "CONNECT",
     NULL},
    {"authenticate refused",
     O_PLAIN,
     {"a AUTHENTICATE PLAIN AHVzZXIAbm9wZQ==\r\n"},
     "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
     "CONNECT LOGIN",
     "pass=<nope>"},
    {"authenticate other mech",
     O_PLAIN,
     {"a AUTHENTICATE CRAM-MD5\r\n"},
     "a NO Unsupported authentication mechanism\r\n",
     "CONNECT",
     NULL},

    /* STARTTLS (6.2.1): what was pipelined after it is dropped. */
    {"starttls",
     O_STARTTLS,
     {"a STARTTLS\r\nb LOGIN user pass\r\n", "c CAPABILITY\r\n" LOGIN},
     "a OK Begin TLS negotiation now\r\n* CAPABILITY " CAPS
     " AUTH=PLAIN SASL-IR\r\nc OK CAPABILITY completed\r\n" LOGGED,
     "CONNECT STARTTLS LOGIN",
     NULL},
    {"starttls not offered",
     O_PLAIN,
     {"a STARTTLS\r\n"},
     "a BAD STARTTLS not offered\r\n",
     "CONNECT",
     NULL},
    {"starttls twice",
     O_STARTTLS,
     {"a STARTTLS\r\n", "b STARTTLS\r\n"},
     "a OK Begin TLS negotiation now\r\nb BAD TLS already active\r\n",
     "CONNECT STARTTLS",
     NULL},

    /* Wrong states. */
    {"select before login",
     O_PLAIN,
     {SELECT},
     "b BAD Not authenticated\r\n",
     "CONNECT",
     NULL},
    {"fetch unselected",
     O_PLAIN,
     {LOGIN "c FETCH 1 FLAGS\r\n"},
     LOGGED "c BAD No mailbox selected\r\n",
     "CONNECT LOGIN",
     NULL},
    {"enable selected",
     O_PLAIN,
     {IN "c ENABLE CONDSTORE\r\n"},
     INOUT "c BAD ENABLE is not valid with a mailbox selected\r\n",
     NULL,
     NULL},

    /* Authenticated state (6.3). */
    {"select",
     O_PLAIN,
     {IN},
     INOUT,
     "CONNECT LOGIN COMMAND",
     "COMMAND SELECT tag=b"},
    {"examine",
     O_PLAIN,
     {LOGIN "b EXAMINE inbox\r\n"},
     LOGGED "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
            "* 3 EXISTS\r\n* 1 RECENT\r\n* OK [UIDVALIDITY 42] UIDs "
            "valid\r\n* OK [UIDNEXT 13] Predicted next UID\r\n"
            "b OK [READ-ONLY] EXAMINE completed\r\n",
     NULL,
     NULL},
    {"select fails deselects",
     O_PLAIN,
     {IN "c SELECT nowhere\r\nd FETCH 1 FLAGS\r\n"},
     INOUT "c NO [NONEXISTENT] No such mailbox\r\n"
           "d BAD No mailbox selected\r\n",
     NULL,
     NULL},
    {"select bye",
     O_PLAIN,
     {LOGIN "b SELECT bye\r\nc NOOP\r\n"},
     LOGGED "* BYE Going away\r\n",
     "CONNECT LOGIN COMMAND CLOSE",
     NULL},
    {"create delete rename",
     O_PLAIN,
     {LOGIN "b CREATE x\r\nc CREATE bad\r\nd RENAME x y\r\ne DELETE y\r\n"
            "f DELETE bad\r\ng SUBSCRIBE y\r\nh UNSUBSCRIBE y\r\n"},
     LOGGED "b OK CREATE completed\r\nc NO [ALREADYEXISTS] CREATE failed\r\n"
            "d OK RENAME completed\r\ne OK DELETE completed\r\n"
            "f BAD Caller says BAD\r\ng OK SUBSCRIBE completed\r\n"
            "h OK UNSUBSCRIBE completed\r\n",
     NULL,
     NULL},
    {"list lsub",
     O_PLAIN,
     {LOGIN "b LIST \"\" *\r\nc LIST \"\" \"\"\r\nd LSUB \"\" %\r\n"},
     LOGGED "* LIST (\\HasNoChildren) \"/\" INBOX\r\n"
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\r\n"
            "b OK LIST completed\r\n* LIST (\\Noselect) \"/\" \"\"\r\n"
            "c OK LIST completed\r\n* LSUB () \"/\" INBOX\r\n"
            "d OK LSUB completed\r\n",
     NULL,
     NULL},
    {"status",
     O_PLAIN,
     {LOGIN "b STATUS \"Sent Items\" (UNSEEN MESSAGES UIDNEXT)\r\n"},
     LOGGED "* STATUS \"Sent Items\" (MESSAGES 3 UIDNEXT 13 UNSEEN 2)\r\n"
            "b OK STATUS completed\r\n",
     NULL,
     NULL},
    {"namespace id enable",
     O_PLAIN,
     {LOGIN "b NAMESPACE\r\nc ENABLE CONDSTORE\r\n"},
     LOGGED "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nb OK NAMESPACE "
            "completed\r\n* ENABLED\r\nc OK ENABLE completed\r\n",
     NULL,
     NULL},

    /* APPEND (6.3.11) with literals. */
    {"append",
     O_PLAIN,
     {LOGIN "b APPEND INBOX (\\Seen) {5}\r\n", "hello\r\n"},
     LOGGED "+ Ready for literal data\r\nb OK [APPENDUID 42 13] APPEND "
            "completed\r\n",
     "CONNECT LOGIN COMMAND",
     "COMMAND APPEND tag=b mbox=INBOX len=5 [hello]"},
    {"append literal+",
     O_PLAIN,
     {LOGIN "b APPEND INBOX {6+}\r\nhi\r\nyo\r\nc NOOP\r\n"},
     LOGGED "b OK [APPENDUID 42 13] APPEND completed\r\nc OK NOOP "
            "completed\r\n",
     NULL,
     "len=6 [hi\r\nyo]"},
    {"append mailbox literal",
     O_PLAIN,
     {LOGIN "b APPEND {5+}\r\nINBOX {3+}\r\nabc\r\n"},
     LOGGED "b OK [APPENDUID 42 13] APPEND completed\r\n",
     NULL,
     "mbox=INBOX len=3 [abc]"},
    {"append refused",
     O_PLAIN,
     {LOGIN "b APPEND x {6+}\r\nREJECT\r\n"},
     LOGGED "b NO [OVERQUOTA] Over quota\r\n",
     NULL,
     NULL},
    {"append too big",
     O_SMALL,
     {LOGIN "b APPEND INBOX {5000}\r\nc NOOP\r\n"},
     LOGGED "b NO [TOOBIG] Message too large\r\nc OK NOOP completed\r\n",
     "CONNECT LOGIN",
     NULL},

    /* Selected state (6.4). */
    {"fetch flags",
     O_PLAIN,
     {IN "c FETCH 1:2 FLAGS\r\n"},
     INOUT "* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS (\\Seen))\r\n"
           "c OK FETCH completed\r\n",
     "CONNECT LOGIN COMMAND COMMAND",
     NULL},
    {"uid fetch",
     O_PLAIN,
     {IN "c UID FETCH 12:* FLAGS\r\n"},
     INOUT "* 3 FETCH (FLAGS (\\Seen) UID 12)\r\nc OK UID FETCH "
           "completed\r\n",
     NULL,
     "COMMAND UID FETCH tag=c"},
    {"fetch fast",
     O_PLAIN,
     {IN "c FETCH 3 FAST\r\n"},
     INOUT "* 3 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 "
           "-0700\" RFC822.SIZE 38)\r\nc OK FETCH completed\r\n",
     NULL,
     NULL},
    {"fetch full",
     O_PLAIN,
     {IN "c FETCH 3 FULL\r\n"},
     INOUT "* 3 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 "
           "-0700\" RFC822.SIZE 38 ENVELOPE (NIL \"hi\") BODY (\"TEXT\" "
           "\"PLAIN\"))\r\nc OK FETCH completed\r\n",
     NULL,
     NULL},
    {"fetch body",
     O_PLAIN,
     {IN "c FETCH 1 (BODY[] BODY.PEEK[TEXT])\r\n"},
     INOUT "* 1 FETCH (BODY[] {38}\r\n" MSG " BODY[TEXT] {7}\r\n" MSG_BODY
           ")\r\nc OK FETCH completed\r\n",
     NULL,
     NULL},
    {"fetch rfc822",
     O_PLAIN,
     {IN "c FETCH 1 (RFC822.HEADER RFC822.TEXT RFC822)\r\n"},
     INOUT "* 1 FETCH (RFC822.HEADER {31}\r\n" MSG_HDR
           " RFC822.TEXT {7}\r\n" MSG_BODY " RFC822 {38}\r\n" MSG
           ")\r\nc OK FETCH completed\r\n",
     NULL,
     NULL},
    {"fetch header fields",
     O_PLAIN,
     {IN "c FETCH 2 BODY.PEEK[HEADER.FIELDS (Subject \"X-A\")]\r\n"},
     INOUT "* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT X-A)] {15}\r\n"
           "Subject: hi\r\n\r\n)\r\nc OK FETCH completed\r\n",
     NULL,
     NULL},
    {"fetch partial",
     O_PLAIN,
     {IN "c FETCH 1 (BODY.PEEK[]<9.5> BODY[TEXT]<5.100> BODY[]<99.1>)\r\n"},
     INOUT "* 1 FETCH (BODY[]<9> {5}\r\nhi\r\nF BODY[TEXT]<5> {2}\r\n\r\n "
           "BODY[]<99> \"\")\r\nc OK FETCH completed\r\n",
     NULL,
     NULL},
    {"fetch missing part",
     O_PLAIN,
     {IN "c FETCH 1 BODY[1.2.MIME]\r\n"},
     INOUT "* 1 FETCH (BODY[1.2.MIME] NIL)\r\nc OK FETCH completed\r\n",
     NULL,
     NULL},
    {"fetch bodystructure",
     O_PLAIN,
     {IN "c FETCH 1 BODYSTRUCTURE\r\n"},
     INOUT "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\"))\r\nc OK FETCH "
           "completed\r\n",
     NULL,
     NULL},
    {"store",
     O_PLAIN,
     {IN "c STORE 1 +FLAGS (\\Deleted)\r\nd STORE 2 FLAGS.SILENT ()\r\n"
         "e UID STORE 11 -FLAGS \\Seen\r\n"},
     INOUT "* 1 FETCH (FLAGS (\\Deleted))\r\nc OK STORE completed\r\n"
           "d OK STORE completed\r\n* 2 FETCH (FLAGS (\\Seen) UID 11)\r\n"
           "e OK UID STORE completed\r\n",
     NULL,
     NULL},
    {"search",
     O_PLAIN,
     {IN "c SEARCH UNSEEN FROM x\r\nd UID SEARCH CHARSET UTF-8 ALL\r\n"},
     INOUT "* SEARCH 1 3\r\nc OK SEARCH completed\r\n* SEARCH 1 3\r\n"
           "d OK UID SEARCH completed\r\n",
     NULL,
     NULL},
    {"search bad charset",
     O_PLAIN,
     {IN "c SEARCH CHARSET KOI8-R ALL\r\n"},
     INOUT "c NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n",
     "CONNECT LOGIN COMMAND",
     NULL},
    {"copy move expunge",
     O_PLAIN,
     {IN "c COPY 1:2 Trash\r\nd UID MOVE 10 Trash\r\ne EXPUNGE\r\n"
         "f UID EXPUNGE 11\r\n"},
     INOUT "c OK [COPYUID 42 10:11 20:21] COPY completed\r\n"
           "* OK [COPYUID 42 10 20] Moved\r\n* 1 EXPUNGE\r\n"
           "d OK UID MOVE completed\r\n* 2 EXPUNGE\r\ne OK EXPUNGE "
           "completed\r\n* 2 EXPUNGE\r\nf OK UID EXPUNGE completed\r\n",
     NULL,
     NULL},
    {"check noop close",
     O_PLAIN,
     {IN "c CHECK\r\nd NOOP\r\ne CLOSE\r\nf FETCH 1 FLAGS\r\n"},
     INOUT "c OK CHECK completed\r\nd OK NOOP completed\r\n"
           "e OK CLOSE completed\r\nf BAD No mailbox selected\r\n",
     "CONNECT LOGIN COMMAND COMMAND COMMAND COMMAND",
     NULL},
    /* RFC 3691: back to the authenticated state; refused when nothing is
     * selected, as CLOSE is. */
    {"unselect",
     O_PLAIN,
     {IN "c UNSELECT\r\nd FETCH 1 FLAGS\r\ne UNSELECT\r\n"},
     INOUT "c OK UNSELECT completed\r\nd BAD No mailbox selected\r\n"
           "e BAD No mailbox selected\r\n",
     "CONNECT LOGIN COMMAND COMMAND",
     NULL},

    /* IDLE (RFC 2177). */
    {"idle",
     O_PLAIN,
     {IN "c IDLE\r\n", "DONE\r\nd NOOP\r\n"},
     INOUT "+ idling\r\nc OK IDLE terminated\r\nd OK NOOP completed\r\n",
     "CONNECT LOGIN COMMAND COMMAND IDLE_DONE COMMAND",
     NULL},
    {"idle not done",
     O_PLAIN,
     {IN "c IDLE\r\n", "d NOOP\r\ne NOOP\r\n"},
     INOUT "+ idling\r\nc BAD Expected DONE\r\ne OK NOOP completed\r\n",
     "CONNECT LOGIN COMMAND COMMAND IDLE_DONE COMMAND",
     NULL},
    {"idle authenticated",
     O_PLAIN,
     {LOGIN "c IDLE\r\ndone\r\n"},
     LOGGED "+ idling\r\nc OK IDLE terminated\r\n",
     NULL,
     NULL},

    /* Bad input: BAD with a reason, the session goes on. */
    {"unknown command",
     O_PLAIN,
     {"a FROB\r\nb NOOP\r\n"},
     "a BAD Unknown command\r\nb OK NOOP completed\r\n",
     "CONNECT",
     NULL},
    {"bad tag",
     O_PLAIN,
     {"* NOOP\r\n\r\nb NOOP\r\n"},
     "* BAD Invalid tag\r\n* BAD Empty command line\r\nb OK NOOP "
     "completed\r\n",
     "CONNECT",
     NULL},
    {"bad arguments",
     O_PLAIN,
     {IN "c FETCH 1 (FLAGS\r\nd FETCH x FLAGS\r\n"},
     INOUT "c BAD Missing argument\r\nd BAD Invalid sequence set\r\n",
     NULL,
     NULL},
    {"bare LF",
     O_PLAIN,
     {"a NOOP\nb NOOP\r\n"},
     "a OK NOOP completed\r\nb OK NOOP completed\r\n",
     NULL,
     NULL},
    {"too many errors",
     O_SMALL,
     {"a X\r\nb X\r\nc X\r\nd X\r\ne X\r\nf X\r\n"},
     "a BAD Unknown command\r\nb BAD Unknown command\r\nc BAD Unknown "
     "command\r\nd BAD Unknown command\r\ne BAD Unknown command\r\n"
     "* BYE Too many errors\r\n",
     "CONNECT CLOSE",
     NULL},
    {"refused logins count",
     O_SMALL,
     {"a LOGIN u x\r\nb LOGIN u x\r\nc LOGIN u x\r\nd LOGIN u x\r\n"
      "e LOGIN u x\r\nf LOGIN user pass\r\n"},
     "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
     "b NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
     "c NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
     "d NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
     "e NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
     "* BYE Too many errors\r\n",
     "CONNECT LOGIN LOGIN LOGIN LOGIN LOGIN CLOSE",
     NULL},
};

static void
check_script(const struct script *s, size_t chunk)
{
    struct run r;

    run_script(&r, s->kind, s->in, chunk);
    check_wellformed(&r.out);
    {
        const char *greet = s->kind == O_STARTTLS ? GREET_STARTTLS
                            : s->kind == O_IMAPS
                                ? "* OK [CAPABILITY " CAPS
                                  " AUTH=PLAIN SASL-IR] imap.test "
                                  "IMAP4rev1 ready\r\n"
                                : GREET_PLAIN;
        size_t gl = strlen(greet);

        ck_assert_msg(r.out.len >= gl && memcmp(r.out.data, greet, gl) == 0,
                      "%s: greeting: got\n%s", s->label, r.out.data);
        ck_assert_msg(strcmp(r.out.data + gl, s->out) == 0,
                      "%s (chunk %zu): got\n%s\nwant\n%s", s->label, chunk,
                      r.out.data + gl, s->out);
    }
    if (s->events)
        ck_assert_msg(strcmp(r.ev.data ? r.ev.data : "", s->events) == 0,
                      "%s: events: got \"%s\", want \"%s\"", s->label,
                      r.ev.data ? r.ev.data : "", s->events);
    if (s->detail)
        ck_assert_msg(r.detail.data && strstr(r.detail.data, s->detail),
                      "%s: details lack \"%s\":\n%s", s->label, s->detail,
                      r.detail.data ? r.detail.data : "");
    run_free(&r);
}

START_TEST(test_script)
{
    check_script(&scripts[_i], 0);
}
END_TEST

/* The same sessions byte by byte and in odd slices: same output. */
START_TEST(test_script_split)
{
    check_script(&scripts[_i], 1);
    check_script(&scripts[_i], 7);
}
END_TEST

/* Runs in (len bytes, may hold NUL) whole and byte by byte; returns the
 * output after the greeting (caller frees) and checks both agree. */
static char *
run_bytes(int kind, const char *in, size_t len, char **events)
{
    char *got[2];

    for (int split = 0; split < 2; split++) {
        struct run r;

        run_start(&r, kind);
        feed(&r, in, len, split ? 1 : 0);
        drain(&r);
        check_wellformed(&r.out);
        got[split] = strdup(r.out.data + strlen(GREET_PLAIN));
        if (split == 0 && events)
            *events = strdup(r.ev.data ? r.ev.data : "");
        run_free(&r);
    }
    ck_assert_str_eq(got[0], got[1]);
    free(got[1]);
    return got[0];
}

START_TEST(test_nul)
{
    static const char in[] = "a NO\0OP\r\nb NOOP\r\n";
    char *out = run_bytes(O_PLAIN, in, sizeof(in) - 1, NULL);

    ck_assert_str_eq(out, "a BAD NUL in command\r\nb OK NOOP completed\r\n");
    free(out);
}
END_TEST

/* A literal over max_literal: a synchronizing one is refused before it is
 * sent (RFC 3501 7.5); a LITERAL+ one comes anyway and is dropped. */
START_TEST(test_literal_too_large)
{
    buf_t in = BUF_INIT;
    char *out, *ev;

    buf_adds(&in, "a LOGIN {2000}\r\nb LOGIN {2000+}\r\n");
    for (int i = 0; i < 2000; i++)
        buf_addc(&in, i % 50 == 49 ? '\n' : 'x');
    buf_adds(&in, " {3+}\r\nabc\r\nc LOGIN user pass\r\n");
    out = run_bytes(O_SMALL, in.data, in.len, &ev);
    ck_assert_str_eq(out, "a BAD [TOOBIG] Literal too large\r\n"
                          "b BAD [TOOBIG] Literal too large\r\n"
                          "c OK [CAPABILITY " CAPS "] Logged in\r\n");
    ck_assert_str_eq(ev, "CONNECT LOGIN");
    free(out);
    free(ev);
    buf_free(&in);
}
END_TEST

/* An APPEND over max_append sent as LITERAL+: dropped, NO [TOOBIG]. */
START_TEST(test_append_dropped)
{
    buf_t in = BUF_INIT;
    char *out, *ev;

    buf_adds(&in, LOGIN "b APPEND INBOX {5000+}\r\n");
    for (int i = 0; i < 5000; i++)
        buf_addc(&in, 'm');
    buf_adds(&in, "\r\nc NOOP\r\n");
    out = run_bytes(O_SMALL, in.data, in.len, &ev);
    ck_assert_str_eq(out, LOGGED "b NO [TOOBIG] Message too large\r\n"
                                 "c OK NOOP completed\r\n");
    ck_assert_str_eq(ev, "CONNECT LOGIN");
    free(out);
    free(ev);
    buf_free(&in);
}
END_TEST

/* A flood: a LITERAL+ literal far over every limit ends the session. */
START_TEST(test_literal_flood)
{
    char *out, *ev;
    const char *in = "a LOGIN {4000000000+}\r\nxxxxxxxx";

    out = run_bytes(O_SMALL, in, strlen(in), &ev);
    ck_assert_str_eq(out, "* BYE [TOOBIG] Literal too large\r\n");
    ck_assert_str_eq(ev, "CONNECT CLOSE");
    free(out);
    free(ev);
}
END_TEST

/* A line over max_line is refused with its tag; one with no end is a
 * flood and ends the session. */
START_TEST(test_line_limit)
{
    buf_t in = BUF_INIT;
    char *out;

    buf_adds(&in, "t1 LOGIN ");
    for (int i = 0; i < 1100; i++)
        buf_addc(&in, 'u');
    buf_adds(&in, " p\r\nt2 NOOP\r\n");
    out = run_bytes(O_SMALL, in.data, in.len, NULL);
    ck_assert_str_eq(out, "t1 BAD Line too long\r\nt2 OK NOOP completed\r\n");
    free(out);

    /* A long line that announces a LITERAL+ literal: the literal is
     * dropped too, not taken for a command. */
    buf_reset(&in);
    buf_adds(&in, "t1 LOGIN ");
    for (int i = 0; i < 3000; i++)
        buf_addc(&in, 'u');
    buf_adds(&in, " {9+}\r\nt9 NOOP\r\n\r\nt2 NOOP\r\n");
    out = run_bytes(O_SMALL, in.data, in.len, NULL);
    ck_assert_str_eq(out, "t1 BAD Line too long\r\nt2 OK NOOP completed\r\n");
    free(out);

    buf_reset(&in);
    for (int i = 0; i < 5000; i++)
        buf_addc(&in, 'z');
    out = run_bytes(O_SMALL, in.data, in.len, NULL);
    ck_assert_str_eq(out, "* BYE Line too long\r\n");
    free(out);
    buf_free(&in);
}
END_TEST

/* A command over max_command, in lines under max_line. */
START_TEST(test_command_limit)
{
    buf_t in = BUF_INIT;
    char *out;

    buf_adds(&in, LOGIN "b LOGIN {900+}\r\n");
    for (int i = 0; i < 900; i++)
        buf_addc(&in, 'a');
    buf_adds(&in, " {900+}\r\n");
    for (int i = 0; i < 900; i++)
        buf_addc(&in, 'b');
    buf_adds(&in, " {900+}\r\n");
    for (int i = 0; i < 900; i++)
        buf_addc(&in, 'c');
    buf_adds(&in, " {900}\r\nc NOOP\r\n");
    out = run_bytes(O_SMALL, in.data, in.len, NULL);
    ck_assert_str_eq(out, LOGGED "b BAD [TOOBIG] Literal too large\r\n"
                                 "c OK NOOP completed\r\n");
    free(out);
    buf_free(&in);
}
END_TEST

/* Drives a session by hand: input, then events answered by the policy
 * unless hold is set (then the first decision is left pending). */
static const struct imap_event *
step(struct run *r, const char *in, bool hold)
{
    const struct imap_event *ev;

    if (in)
        ck_assert_uint_eq(imap_server_input(r->srv, in, strlen(in)),
                          strlen(in));
    while ((ev = imap_server_next(r->srv))->type != IMAP_EV_NONE) {
        note(r, ev);
        if (ev->type <= IMAP_EV_COMMAND) {
            if (hold) {
                take_output(r);
                return ev;
            }
            answer(r->srv, ev);
        }
        take_output(r);
    }
    take_output(r);
    return NULL;
}

static void
want_out(struct run *r, const char *want)
{
    ck_assert_msg(strcmp(r->out.data ? r->out.data : "", want) == 0,
                  "got\n%s\nwant\n%s", r->out.data ? r->out.data : "", want);
    buf_reset(&r->out);
}

/* Unsolicited responses (RFC 3501 5.2, 5.3, 7.4.1). */
START_TEST(test_unsolicited)
{
    struct run r;
    const struct imap_event *ev;

    run_start(&r, O_PLAIN);
    step(&r, IN, false);
    buf_reset(&r.out);
    ck_assert(!imap_server_expunge_ok(r.srv));

    /* No command in progress: EXISTS goes at once, EXPUNGE waits, and so
     * does what comes after it. */
    imap_server_exists(r.srv, 4);
    take_output(&r);
    want_out(&r, "* 4 EXISTS\r\n");
    imap_server_expunge(r.srv, 2);
    imap_server_exists(r.srv, 4);
    take_output(&r);
    want_out(&r, "");

    /* The next command (NOOP, a decision when selected) gets them when
     * it is handed out, before its own responses. */
    ev = step(&r, "c NOOP\r\n", true);
    ck_assert_ptr_nonnull(ev);
    ck_assert(imap_server_expunge_ok(r.srv));
    imap_server_recent(r.srv, 0);
    imap_server_complete(r.srv, IMAP_OK, NULL, NULL);
    take_output(&r);
    want_out(&r, "* 2 EXPUNGE\r\n* 4 EXISTS\r\n* 0 RECENT\r\n"
                 "c OK NOOP completed\r\n");

    /* During a FETCH, an EXPUNGE waits; FETCH responses go; the held
     * EXPUNGE stays past the FETCH's end and the SEARCH after it, and
     * goes with the next command that allows it. */
    ev = step(&r, "d FETCH 1 FLAGS\r\n", true);
    ck_assert(!imap_server_expunge_ok(r.srv));
    imap_server_expunge(r.srv, 3);
    answer(r.srv, ev);
    take_output(&r);
    want_out(&r, "* 1 FETCH (FLAGS (\\Seen))\r\nd OK FETCH completed\r\n");
    step(&r, "e SEARCH ALL\r\n", false);
    want_out(&r, "* SEARCH 1 3\r\ne OK SEARCH completed\r\n");
    /* UID SEARCH allows EXPUNGE (RFC 3501 7.4.1 names only the others). */
    step(&r, "f UID SEARCH ALL\r\n", false);
    want_out(&r, "* 3 EXPUNGE\r\n* SEARCH 1 3\r\nf OK UID SEARCH "
                 "completed\r\n");

    /* During IDLE everything goes at once. */
    step(&r, "g IDLE\r\n", false);
    want_out(&r, "+ idling\r\n");
    ck_assert(imap_server_idling(r.srv));
    ck_assert(imap_server_expunge_ok(r.srv));
    imap_server_expunge(r.srv, 1);
    imap_server_exists(r.srv, 5);
    imap_server_fetch_begin(r.srv, 2);
    imap_server_fetch_flags(r.srv, "\\Flagged");
    imap_server_fetch_end(r.srv);
    take_output(&r);
    want_out(&r, "* 1 EXPUNGE\r\n* 5 EXISTS\r\n* 2 FETCH (FLAGS "
                 "(\\Flagged))\r\n");
    step(&r, "DONE\r\n", false);
    want_out(&r, "g OK IDLE terminated\r\n");
    ck_assert(!imap_server_idling(r.srv));

    /* Held before IDLE: sent when IDLE is handed out. */
    imap_server_expunge(r.srv, 4);
    take_output(&r);
    want_out(&r, "");
    step(&r, "h IDLE\r\n", false);
    want_out(&r, "* 4 EXPUNGE\r\n+ idling\r\n");
    step(&r, "DONE\r\n", false);
    want_out(&r, "h OK IDLE terminated\r\n");

    /* Held, then a command the engine answers itself. */
    imap_server_expunge(r.srv, 1);
    step(&r, "i CAPABILITY\r\n", false);
    want_out(&r, "* 1 EXPUNGE\r\n* CAPABILITY " CAPS "\r\ni OK CAPABILITY "
                 "completed\r\n");
    run_free(&r);
}
END_TEST

/* Written before the greeting: sent after it. */
START_TEST(test_unsolicited_before_greeting)
{
    struct imap_server_opts o = opts_for(O_PLAIN);
    imap_server_t *srv = imap_server_new(&o);
    const struct imap_event *ev = imap_server_next(srv);
    const char *out;
    size_t n;

    ck_assert_int_eq(ev->type, IMAP_EV_CONNECT);
    imap_server_untagged(srv, "OK early\r\nbird");
    out = imap_server_output(srv, &n);
    ck_assert_uint_eq(n, 0);
    imap_server_complete(srv, IMAP_OK, NULL, "hi");
    out = imap_server_output(srv, &n);
    ck_assert_str_eq(out, "* OK [CAPABILITY " CAPS " AUTH=PLAIN SASL-IR] "
                          "imap.test hi\r\n* OK early??bird\r\n");
    imap_server_destroy(&srv);
}
END_TEST

/* Held responses are bounded. */
START_TEST(test_held_limit)
{
    struct run r;

    run_start(&r, O_PLAIN);
    step(&r, IN, false);
    buf_reset(&r.out);
    for (uint32_t i = 0; i < 200000 && !imap_server_done(r.srv); i++)
        imap_server_expunge(r.srv, 1000000 + i);
    ck_assert(imap_server_done(r.srv));
    step(&r, NULL, false);
    want_out(&r, "* BYE Too many mailbox changes held back\r\n");
    ck_assert_str_eq(r.ev.data, "CONNECT LOGIN COMMAND CLOSE");
    run_free(&r);
}
END_TEST

/* PREAUTH and BYE greetings. */
START_TEST(test_greetings)
{
    struct imap_server_opts o = opts_for(O_STARTTLS);
    imap_server_t *srv = imap_server_new(&o);
    const char *out;
    size_t n;

    imap_server_next(srv);
    imap_server_complete(srv, IMAP_PREAUTH, NULL, NULL);
    ck_assert_int_eq(imap_server_state(srv), IMAP_STATE_AUTH);
    out = imap_server_output(srv, &n);
    ck_assert_str_eq(out, "* PREAUTH [CAPABILITY " CAPS "] imap.test "
                          "IMAP4rev1 ready\r\n");
    imap_server_destroy(&srv);

    srv = imap_server_new(&o);
    imap_server_next(srv);
    imap_server_complete(srv, IMAP_BYE, NULL, "Too busy");
    ck_assert(imap_server_done(srv));
    ck_assert_int_eq(imap_server_next(srv)->type, IMAP_EV_CLOSE);
    ck_assert_int_eq(imap_server_next(srv)->type, IMAP_EV_NONE);
    out = imap_server_output(srv, &n);
    ck_assert_str_eq(out, "* BYE Too busy\r\n");
    ck_assert_uint_eq(imap_server_input(srv, "a NOOP\r\n", 8), 8);
    ck_assert_int_eq(imap_server_next(srv)->type, IMAP_EV_NONE);
    imap_server_destroy(&srv);
}
END_TEST

/* States and flags the caller can read. */
START_TEST(test_state)
{
    struct run r;

    run_start(&r, O_STARTTLS);
    ck_assert_int_eq(imap_server_state(r.srv), IMAP_STATE_NOT_AUTH);
    ck_assert(!imap_server_tls(r.srv));
    step(&r, "a STARTTLS\r\n", false);
    ck_assert_int_eq(imap_server_input(r.srv, "x", 1), 1);
    imap_server_tls_started(r.srv);
    ck_assert(imap_server_tls(r.srv));
    step(&r, LOGIN, false);
    ck_assert_int_eq(imap_server_state(r.srv), IMAP_STATE_AUTH);
    step(&r, "b EXAMINE INBOX\r\n", false);
    ck_assert_int_eq(imap_server_state(r.srv), IMAP_STATE_SELECTED);
    ck_assert(imap_server_read_only(r.srv));
    step(&r, "c SELECT INBOX\r\n", false);
    ck_assert(!imap_server_read_only(r.srv));
    step(&r, "d LOGOUT\r\n", false);
    ck_assert_int_eq(imap_server_state(r.srv), IMAP_STATE_LOGOUT);
    ck_assert(imap_server_done(r.srv));
    ck_assert_str_eq(r.ev.data, "CONNECT STARTTLS LOGIN COMMAND COMMAND "
                                "LOGOUT");
    run_free(&r);
}
END_TEST

/* What a client pipelined after a pending login can be taken out whole,
 * and is then gone (the mailbox hands it to the shard owning the
 * account). */
START_TEST(test_take_input)
{
    struct run r;
    const struct imap_event *ev;
    buf_t rest = BUF_INIT;

    run_start(&r, O_PLAIN);
    ev = step(&r, "a LOGIN user pass\r\nb SELECT INBOX\r\nc NO", true);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->type, IMAP_EV_LOGIN);
    imap_server_take_input(r.srv, &rest);
    ck_assert_str_eq(rest.data, "b SELECT INBOX\r\nc NO");
    imap_server_complete(r.srv, IMAP_OK, NULL, NULL);
    ck_assert_int_eq(imap_server_next(r.srv)->type, IMAP_EV_NONE);
    ck_assert_int_eq(imap_server_state(r.srv), IMAP_STATE_AUTH);
    imap_server_take_input(r.srv, &rest);
    ck_assert_uint_eq(rest.len, strlen("b SELECT INBOX\r\nc NO"));
    buf_free(&rest);
    run_free(&r);
}
END_TEST

/* A decision's data stays put while more input is fed; back-pressure
 * holds the rest. */
START_TEST(test_event_lifetime_backpressure)
{
    struct run r;
    const struct imap_event *ev;
    char more[16384];
    size_t took, total = 0;

    run_start(&r, O_PLAIN);
    step(&r, LOGIN, false);
    ev = step(&r, "b APPEND INBOX {5+}\r\nhello\r\n", true);
    ck_assert_ptr_nonnull(ev);
    memset(more, 'q', sizeof(more));
    do {
        took = imap_server_input(r.srv, more, sizeof(more));
        total += took;
        ck_assert_int_eq(imap_server_next(r.srv)->type, IMAP_EV_NONE);
    } while (took == sizeof(more));
    ck_assert_uint_lt(total, 64 * 1024);
    ck_assert_str_eq(ev->cmd->tag, "b");
    ck_assert_str_eq(ev->cmd->append.mailbox, "INBOX");
    ck_assert_uint_eq(ev->cmd->append.len, 5);
    ck_assert(memcmp(ev->cmd->append.msg, "hello", 5) == 0);
    imap_server_complete(r.srv, IMAP_OK, NULL, NULL);
    run_free(&r);
}
END_TEST

/* A client that does not read: no new command while the output is over
 * IMAP_OUTPUT_MAX. */
START_TEST(test_backpressure_output)
{
    struct imap_server_opts o = opts_for(O_PLAIN);
    imap_server_t *srv = imap_server_new(&o);
    buf_t in = BUF_INIT;
    size_t n, took;
    int answered = 0;

    imap_server_next(srv);
    imap_server_complete(srv, IMAP_OK, NULL, NULL);
    for (int i = 0; i < 1000; i++)
        buf_printf(&in, "t%d CAPABILITY\r\n", i);
    took = imap_server_input(srv, in.data, in.len);
    while (imap_server_next(srv)->type != IMAP_EV_NONE)
        ;
    imap_server_output(srv, &n);
    ck_assert_uint_ge(n, IMAP_OUTPUT_MAX);
    ck_assert_uint_lt(n, IMAP_OUTPUT_MAX + 1024);
    /* Reading resumes once the output is sent. */
    while (took < in.len || n > 0) {
        imap_server_output_done(srv, n);
        took += imap_server_input(srv, in.data + took, in.len - took);
        while (imap_server_next(srv)->type != IMAP_EV_NONE)
            ;
        imap_server_output(srv, &n);
        ck_assert(answered++ < 100);
    }
    imap_server_destroy(&srv);
    buf_free(&in);
}
END_TEST

/* Closed during the handshake, then the handshake ends: still closed. */
START_TEST(test_close_during_handshake)
{
    struct run r;

    run_start(&r, O_STARTTLS);
    step(&r, "a STARTTLS\r\n", false);
    imap_server_close(r.srv, "Timeout");
    imap_server_tls_started(r.srv);
    step(&r, NULL, false);
    ck_assert(imap_server_done(r.srv));
    ck_assert(!imap_server_tls(r.srv));
    ck_assert_str_eq(r.ev.data, "CONNECT STARTTLS CLOSE");
    want_out(&r, GREET_STARTTLS "a OK Begin TLS negotiation now\r\n"
                                "* BYE Timeout\r\n");
    run_free(&r);
}
END_TEST

/* imap_server_close() with a decision pending drops it. */
START_TEST(test_close_pending)
{
    struct run r;

    run_start(&r, O_PLAIN);
    ck_assert_ptr_nonnull(step(&r, LOGIN, true));
    imap_server_close(r.srv, NULL);
    step(&r, "b NOOP\r\n", false);
    want_out(&r, GREET_PLAIN "* BYE Server shutting down\r\n");
    ck_assert_str_eq(r.ev.data, "CONNECT LOGIN CLOSE");
    run_free(&r);
}
END_TEST

/* A large FETCH answer, sent in small pieces while it is written: the
 * stream is whole and in order. */
START_TEST(test_large_fetch_pieces)
{
    struct run r;
    const struct imap_event *ev;
    buf_t body = BUF_INIT, want = BUF_INIT;
    struct imap_fetch_att att = {.item = IMAP_FETCH_SECTION};

    for (int i = 0; i < 200000; i++)
        buf_printf(&body, "line %d\r\n", i);
    run_start(&r, O_PLAIN);
    step(&r, IN, false);
    buf_reset(&r.out);
    ev = step(&r, "c FETCH 1:3 BODY.PEEK[]\r\n", true);
    ck_assert_ptr_nonnull(ev);
    for (uint32_t seq = 1; seq <= 3; seq++) {
        size_t n;
        const char *o;

        imap_server_fetch_begin(r.srv, seq);
        imap_server_fetch_uid(r.srv, seq);
        /* Some of it goes out before the response is finished. */
        o = imap_server_output(r.srv, &n);
        buf_add(&r.out, o, n / 2);
        imap_server_output_done(r.srv, n / 2);
        imap_server_fetch_section(r.srv, &att, body.data, body.len);
        imap_server_fetch_end(r.srv);
        buf_printf(&want, "* %u FETCH (UID %u BODY[] {%zu}\r\n", seq, seq,
                   body.len);
        buf_add(&want, body.data, body.len);
        buf_adds(&want, ")\r\n");
        while ((o = imap_server_output(r.srv, &n)), n > 0) {
            size_t k = n < 1000 ? n : 1000;

            buf_add(&r.out, o, k);
            imap_server_output_done(r.srv, k);
        }
    }
    imap_server_complete(r.srv, IMAP_OK, NULL, NULL);
    take_output(&r);
    buf_adds(&want, "c OK FETCH completed\r\n");
    ck_assert_uint_eq(r.out.len, want.len);
    ck_assert(memcmp(r.out.data, want.data, want.len) == 0);
    run_free(&r);
    buf_free(&body);
    buf_free(&want);
}
END_TEST

/* Closed in the middle of a FETCH response: the part not sent is taken
 * back, the output stays whole responses. */
START_TEST(test_close_in_fetch)
{
    struct run r;

    run_start(&r, O_PLAIN);
    step(&r, IN, false);
    ck_assert_ptr_nonnull(step(&r, "c FETCH 1 FLAGS\r\n", true));
    imap_server_fetch_begin(r.srv, 1);
    imap_server_fetch_flags(r.srv, "\\Seen");
    imap_server_close(r.srv, "Shutting down");
    /* The caller may finish the response; it goes nowhere. */
    imap_server_fetch_uid(r.srv, 1);
    imap_server_fetch_end(r.srv);
    step(&r, NULL, false);
    check_wellformed(&r.out);
    ck_assert_ptr_nonnull(strstr(r.out.data, SELECTED "* BYE Shutting "
                                                      "down\r\n"));
    run_free(&r);
}
END_TEST

/* Formatting of values and caller text. */
START_TEST(test_format)
{
    buf_t b = BUF_INIT;
    struct run r;
    static const char *const caps[] = {"X-ONE", "bad cap", "UTF8=ACCEPT"};
    static const char *const idp[] = {"k\"ey", NULL};
    struct imap_fetch_att att = {.item = IMAP_FETCH_SECTION};

    imap_server_put_string(&b, "a\"b\\c", 5);
    imap_server_put_nstring(&b, NULL);
    imap_server_put_string(&b, "x\r\ny", 4);
    imap_server_put_string(&b, "caf\xc3\xa9", 5);
    imap_server_put_astring(&b, "INBOX");
    imap_server_put_astring(&b, "nil");
    imap_server_put_astring(&b, "");
    imap_server_put_astring(&b, "a b");
    ck_assert_str_eq(b.data, "\"a\\\"b\\\\c\"NIL{4}\r\nx\r\ny{5}\r\ncaf\xc3\xa9"
                             "INBOX\"nil\"\"\"\"a b\"");
    buf_free(&b);

    run_start(&r, O_PLAIN);
    step(&r, IN, false);
    buf_reset(&r.out);
    imap_server_flags(r.srv, " \\Seen  $Junk \\ bad\" ok \\* (x)");
    imap_server_list(r.srv, false, "\\Noinferiors", '\0', "a\"b");
    imap_server_list(r.srv, true, NULL, '\\', "caf\xc3\xa9");
    imap_server_enabled(r.srv, caps, 3);
    imap_server_id(r.srv, idp, 2);
    imap_server_id(r.srv, NULL, 0);
    imap_server_search(r.srv, NULL, 0);
    imap_server_namespace(r.srv, "INBOX.", '.');
    imap_server_untagged_status(r.srv, IMAP_NO, "ALERT]x", "[not a code");
    imap_server_untagged_status(r.srv, IMAP_BAD, NULL, NULL);
    imap_server_untagged(r.srv, NULL);
    /* A text ending like a literal's announcement must not read as one
     * (found by fuzz_imap_server). */
    imap_server_untagged(r.srv, "see {5}");
    imap_server_untagged(r.srv, "ENABLED AUTH4}");
    imap_server_fetch_begin(r.srv, 7);
    imap_server_fetch_internaldate(r.srv, 0, 90);
    imap_server_fetch_internaldate(r.srv, 1700000000, -1439);
    imap_server_fetch_section(r.srv, &att, NULL, 0);
    imap_server_fetch_item(r.srv, "X Y", NULL, 0);
    imap_server_fetch_size(r.srv, 12345678901ull);
    imap_server_fetch_end(r.srv);
    take_output(&r);
    want_out(&r, "* FLAGS (\\Seen $Junk ok \\*)\r\n"
                 "* LIST (\\Noinferiors) NIL \"a\\\"b\"\r\n"
                 "* LSUB () \"\\\\\" {5}\r\ncaf\xc3\xa9\r\n"
                 "* ENABLED X-ONE UTF8=ACCEPT\r\n"
                 "* ID (\"k\\\"ey\" NIL)\r\n* ID NIL\r\n* SEARCH\r\n"
                 "* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n"
                 "* NO [ALERT?x] [not a code\r\n* BAD Completed\r\n* OK\r\n"
                 "* see {5?\r\n* ENABLED AUTH4}\r\n"
                 "* 7 FETCH (INTERNALDATE \"01-Jan-1970 01:30:00 +0130\" "
                 "INTERNALDATE \"13-Nov-2023 22:14:20 -2359\" BODY[] NIL "
                 "X?Y NIL RFC822.SIZE 12345678901)\r\n");
    run_free(&r);
}
END_TEST

/* Options: defaults for zero, floors under the minimums. */
START_TEST(test_defaults)
{
    struct imap_server_opts o = {.max_line = 10, .max_literal = 1};
    imap_server_t *srv = imap_server_new(&o);
    buf_t in = BUF_INIT;
    const char *out;
    size_t n;

    imap_server_next(srv);
    imap_server_complete(srv, IMAP_OK, NULL, NULL);
    buf_adds(&in, "a NOOP ");
    for (int i = 0; i < 900; i++)
        buf_addc(&in, 'x');
    buf_adds(&in, "\r\nb LOGIN {1000}\r\n");
    imap_server_input(srv, in.data, in.len);
    while (imap_server_next(srv)->type != IMAP_EV_NONE)
        ;
    out = imap_server_output(srv, &n);
    ck_assert_msg(strstr(out, "localhost IMAP4rev1 ready\r\n"
                              "a BAD Unexpected argument\r\n"
                              "+ Ready for literal data\r\n"),
                  "got %s", out);
    imap_server_destroy(&srv);
    buf_free(&in);
}
END_TEST

/* Caller bugs abort. */
START_TEST(test_complete_nothing_pending)
{
    struct imap_server_opts o = opts_for(O_PLAIN);
    imap_server_t *srv = imap_server_new(&o);

    imap_server_complete(srv, IMAP_OK, NULL, NULL);
}
END_TEST

START_TEST(test_complete_connect_no)
{
    struct imap_server_opts o = opts_for(O_PLAIN);
    imap_server_t *srv = imap_server_new(&o);

    imap_server_next(srv);
    imap_server_complete(srv, IMAP_NO, NULL, NULL);
}
END_TEST

START_TEST(test_complete_preauth_command)
{
    struct run r;

    run_start(&r, O_PLAIN);
    step(&r, LOGIN, false);
    step(&r, "b NAMESPACE\r\n", true);
    imap_server_complete(r.srv, IMAP_PREAUTH, NULL, NULL);
}
END_TEST

START_TEST(test_complete_in_fetch)
{
    struct run r;

    run_start(&r, O_PLAIN);
    step(&r, IN, false);
    step(&r, "c FETCH 1 FLAGS\r\n", true);
    imap_server_fetch_begin(r.srv, 1);
    imap_server_complete(r.srv, IMAP_OK, NULL, NULL);
}
END_TEST

START_TEST(test_untagged_in_fetch)
{
    struct run r;

    run_start(&r, O_PLAIN);
    imap_server_fetch_begin(r.srv, 1);
    imap_server_exists(r.srv, 1);
}
END_TEST

START_TEST(test_fetch_item_outside)
{
    struct run r;

    run_start(&r, O_PLAIN);
    imap_server_fetch_uid(r.srv, 1);
}
END_TEST

START_TEST(test_tls_started_unasked)
{
    struct imap_server_opts o = opts_for(O_STARTTLS);
    imap_server_t *srv = imap_server_new(&o);

    imap_server_tls_started(srv);
}
END_TEST

/*
 * lib/imap_mime.h, the FETCH helper: ENVELOPE, BODYSTRUCTURE and sections
 * of messages, compared with what RFC 3501 7.4.2 and 6.4.5 want.
 */

#define M_MIXED                                                                \
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"                          \
    "From: Terry Gray <gray@cac.washington.edu>\r\n"                           \
    "Subject: IMAP4rev1 WG mtg summary and minutes\r\n"                        \
    "To: imap@cac.washington.edu, \"A, \\\"B\\\"\" <ab@x.test>,\r\n"           \
    " group: m@n.test, o@p.test;\r\n"                                          \
    "cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n"    \
    "Message-Id: <B27397-0100000@cac.washington.edu>\r\n"                      \
    "MIME-Version: 1.0\r\n"                                                    \
    "Content-Type: multipart/mixed; boundary=\"XX\"\r\n"                       \
    "\r\n"                                                                     \
    "preamble\r\n"                                                             \
    "--XX\r\n"                                                                 \
    "Content-Type: text/plain; charset=utf-8\r\n"                              \
    "\r\n"                                                                     \
    "hello\r\nworld\r\n"                                                       \
    "--XX  \r\n"                                                               \
    "Content-Type: message/rfc822\r\n"                                         \
    "Content-Disposition: attachment; filename=\"x.eml\"\r\n"                  \
    "\r\n"                                                                     \
    "Subject: inner\r\nFrom: <@r1,@r2:a@b.test>\r\n\r\ninner body\r\n"         \
    "--XXnot a delimiter\r\n"                                                  \
    "--XX--\r\n"                                                               \
    "epilogue\r\n"

#define M_ALT                                                                  \
    "From: a@b.test\r\nContent-Type: multipart/mixed; boundary=out\r\n\r\n"    \
    "--out\r\nContent-Type: multipart/alternative; boundary=\"in\"\r\n\r\n"    \
    "--in\r\nContent-Type: text/plain\r\n\r\nplain\r\n"                        \
    "--in\r\nContent-Type: text/html; charset=\"us-ascii\"\r\n\r\n"            \
    "<p>html</p>\r\n--in--\r\n"                                                \
    "--out\r\nContent-Type: image/png; name=a.png\r\n"                         \
    "Content-Transfer-Encoding: base64\r\nContent-ID: <img1>\r\n"              \
    "Content-Description: a picture\r\nContent-MD5: Q2hlY2sgSW50\r\n"          \
    "Content-Disposition: inline\r\nContent-Language: en, de\r\n"              \
    "Content-Location: http://x.test/a.png\r\n\r\niVBORw0K\r\n--out--\r\n"

static const struct mime_row {
    const char *label, *msg;
    const char *envelope, *bodystructure, *body;
} mime_rows[] = {
    {"plain", "Subject: hi\r\n\r\nline 1\r\nline 2",
     "(NIL \"hi\" NIL NIL NIL NIL NIL NIL NIL NIL)",
     "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 14 2 "
     "NIL NIL NIL NIL)",
     "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 14 2)"},
    {"empty", "", "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)",
     "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 0 0 NIL "
     "NIL NIL NIL)",
     NULL},
    {"header only, bare LF", "Subject: x\nFrom: Me <me@x.test>\n",
     "(NIL \"x\" ((\"Me\" NIL \"me\" \"x.test\")) ((\"Me\" NIL \"me\" "
     "\"x.test\")) ((\"Me\" NIL \"me\" \"x.test\")) NIL NIL NIL NIL NIL)",
     NULL,
     "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" "
     "0 0)"},
    {"mixed", M_MIXED,
     "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary "
     "and minutes\" ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
     "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" "
     "NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" "
     "\"cac.washington.edu\")(\"A, \\\"B\\\"\" NIL \"ab\" \"x.test\")(NIL NIL "
     "\"group\" NIL)(NIL NIL \"m\" \"n.test\")(NIL NIL \"o\" \"p.test\")(NIL "
     "NIL NIL NIL)) ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John "
     "Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
     "\"<B27397-0100000@cac.washington.edu>\")",
     "((\"TEXT\" \"PLAIN\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 12 2 NIL "
     "NIL NIL NIL)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 75 (NIL "
     "\"inner\" ((NIL \"@r1,@r2\" \"a\" \"b.test\")) ((NIL \"@r1,@r2\" \"a\" "
     "\"b.test\")) ((NIL \"@r1,@r2\" \"a\" \"b.test\")) NIL NIL NIL NIL NIL) "
     "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 31 2 NIL "
     "NIL NIL NIL) 5 NIL (\"attachment\" (\"filename\" \"x.eml\")) NIL NIL) "
     "\"MIXED\" (\"boundary\" \"XX\") NIL NIL NIL)",
     NULL},
    {"alternative and extension fields", M_ALT, NULL,
     "(((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 5 1 NIL NIL NIL NIL)(\"TEXT\" "
     "\"HTML\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 11 1 NIL NIL NIL "
     "NIL) \"ALTERNATIVE\" (\"boundary\" \"in\") NIL NIL NIL)(\"IMAGE\" "
     "\"PNG\" (\"name\" \"a.png\") \"<img1>\" \"a picture\" \"BASE64\" 8 "
     "\"Q2hlY2sgSW50\" (\"inline\" NIL) (\"en\" \"de\") "
     "\"http://x.test/a.png\") \"MIXED\" (\"boundary\" \"out\") NIL NIL NIL)",
     "(((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 5 1)(\"TEXT\" \"HTML\" "
     "(\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 11 1) \"ALTERNATIVE\")"
     "(\"IMAGE\" \"PNG\" (\"name\" \"a.png\") \"<img1>\" \"a picture\" "
     "\"BASE64\" 8) \"MIXED\")"},
    {"multipart without boundary",
     "Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nA\r\n--x--\r\n", NULL,
     "(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"7BIT\" 17 NIL NIL NIL "
     "NIL)",
     NULL},
    {"multipart without parts",
     "Content-Type: multipart/mixed; boundary=x\r\n\r\nno parts here\r\n", NULL,
     "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 0 0 "
     "NIL NIL NIL NIL) \"MIXED\" (\"boundary\" \"x\") NIL NIL NIL)",
     NULL},
    {"unclosed multipart",
     "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nA\r\n", NULL,
     NULL,
     "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3 1) "
     "\"MIXED\")"},
    {"digest",
     "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
     "Subject: s\r\n\r\nb\r\n--d--\r\n",
     NULL, NULL,
     "((\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 15 (NIL \"s\" NIL NIL NIL "
     "NIL NIL NIL NIL NIL) (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL "
     "NIL \"7BIT\" 1 1) 3) \"DIGEST\")"},
    {"empty quoted parameter",
     "Content-Type: text/plain; a=\"\"; b=\"\\\"\"\r\n\r\nx", NULL, NULL,
     "(\"TEXT\" \"PLAIN\" (\"a\" \"\" \"b\" \"\\\"\") NIL NIL \"7BIT\" 1 1)"},
    {"bad content type", "Content-Type: text\r\n\r\nx", NULL, NULL,
     "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 1 1)"},
    {"envelope odds",
     "Subject: caf\xc3\xa9\r\nFrom: (c) \"x \\\\ y\" <x@y>\r\n"
     "Reply-To:\r\nSender: s@t\r\nTo: undisclosed-recipients:;\r\n"
     "Cc: bare, @odd, <>\r\nBcc: a@b (comment), \"q\"@c\r\n"
     "In-Reply-To: <p@q>\r\n\r\n",
     "(NIL {5}\r\ncaf\xc3\xa9 ((\"x \\\\ y\" NIL \"x\" \"y\")) ((NIL NIL \"s\" "
     "\"t\")) ((\"x \\\\ y\" NIL \"x\" \"y\")) ((NIL NIL "
     "\"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) ((NIL NIL \"bare\" "
     "\"\")(NIL NIL \"\" \"odd\")) ((NIL NIL \"a\" \"b\")(NIL NIL \"q\" "
     "\"c\")) \"<p@q>\" NIL)",
     NULL, NULL},
};

START_TEST(test_mime)
{
    const struct mime_row *row = &mime_rows[_i];
    imap_mime_t *m = imap_mime_parse(row->msg, strlen(row->msg));
    buf_t b = BUF_INIT;

    ck_assert_uint_eq(imap_mime_size(m), strlen(row->msg));
    if (row->envelope) {
        imap_mime_envelope(m, &b);
        ck_assert_msg(strcmp(b.data, row->envelope) == 0,
                      "%s: envelope: got\n%s\nwant\n%s", row->label, b.data,
                      row->envelope);
        buf_reset(&b);
    }
    if (row->bodystructure) {
        imap_mime_bodystructure(m, true, &b);
        ck_assert_msg(strcmp(b.data, row->bodystructure) == 0,
                      "%s: bodystructure: got\n%s\nwant\n%s", row->label,
                      b.data, row->bodystructure);
        buf_reset(&b);
    }
    if (row->body) {
        imap_mime_bodystructure(m, false, &b);
        ck_assert_msg(strcmp(b.data, row->body) == 0,
                      "%s: body: got\n%s\nwant\n%s", row->label, b.data,
                      row->body);
    }
    imap_mime_destroy(&m);
    ck_assert_ptr_null(m);
    buf_free(&b);
}
END_TEST

static const struct {
    const char *label, *msg, *section, *want; /* want NULL: none */
} section_rows[] = {
    {"whole", "S: x\r\n\r\nbody", "", "S: x\r\n\r\nbody"},
    {"header", "S: x\r\n\r\nbody", "HEADER", "S: x\r\n\r\n"},
    {"text", "S: x\r\n\r\nbody", "TEXT", "body"},
    {"part 1 of a single part", "S: x\r\n\r\nbody", "1", "body"},
    {"part 2 of a single part", "S: x\r\n\r\nbody", "2", NULL},
    {"mime of part 1", "S: x\r\n\r\nbody", "1.MIME", "S: x\r\n\r\n"},
    {"header of a non-message part", "S: x\r\n\r\nbody", "1.HEADER", NULL},
    {"fields", "A: 1\r\nB: 2\r\n 3\r\nc: 4\r\n\r\nbody", "HEADER.FIELDS (C B)",
     "B: 2\r\n 3\r\nc: 4\r\n\r\n"},
    {"fields not", "A: 1\r\nB: 2\r\nc: 4\r\n\r\nbody",
     "HEADER.FIELDS.NOT (C B)", "A: 1\r\n\r\n"},
    {"fields none", "A: 1\r\n\r\nbody", "HEADER.FIELDS (X)", "\r\n"},
    {"fields unended", "A: 1", "HEADER.FIELDS (A)", "A: 1\r\n\r\n"},
    {"multipart part", M_MIXED, "1", "hello\r\nworld"},
    {"multipart part mime", M_MIXED, "1.MIME",
     "Content-Type: text/plain; charset=utf-8\r\n\r\n"},
    {"message part", M_MIXED, "2",
     "Subject: inner\r\nFrom: <@r1,@r2:a@b.test>\r\n\r\ninner body\r\n"
     "--XXnot a delimiter"},
    {"message part header", M_MIXED, "2.HEADER",
     "Subject: inner\r\nFrom: <@r1,@r2:a@b.test>\r\n\r\n"},
    {"message part text", M_MIXED, "2.TEXT",
     "inner body\r\n--XXnot a delimiter"},
    {"message part fields", M_MIXED, "2.HEADER.FIELDS (SUBJECT)",
     "Subject: inner\r\n\r\n"},
    {"inside a message part", M_MIXED, "2.1",
     "inner body\r\n--XXnot a delimiter"},
    {"past the last part", M_MIXED, "3", NULL},
    {"nested", M_ALT, "1.2", "<p>html</p>"},
    {"nested mime", M_ALT, "1.2.MIME",
     "Content-Type: text/html; charset=\"us-ascii\"\r\n\r\n"},
    {"nested too far", M_ALT, "1.2.1", "<p>html</p>"},
    {"nested beyond", M_ALT, "1.2.2", NULL},
    {"attachment", M_ALT, "2", "iVBORw0K"},
};

START_TEST(test_mime_section)
{
    const char *msg = section_rows[_i].msg, *want = section_rows[_i].want;
    imap_mime_t *m = imap_mime_parse(msg, strlen(msg));
    imap_parse_t *p = imap_parse_new();
    const struct imap_cmd *c;
    const char *why, *data;
    buf_t cmd = BUF_INIT, scratch = BUF_INIT;
    size_t len;
    bool found;

    buf_printf(&cmd, "a FETCH 1 BODY[%s]\r\n", section_rows[_i].section);
    ck_assert_int_eq(imap_parse_command(p, cmd.data, cmd.len, &c, &why), 0);
    found = imap_mime_section(m, &c->fetch.att[0].sec, &scratch, &data, &len);
    ck_assert_msg(found == (want != NULL), "%s: found %d",
                  section_rows[_i].label, found);
    if (found)
        ck_assert_msg(len == strlen(want) && memcmp(data, want, len) == 0,
                      "%s: got <%.*s>, want <%s>", section_rows[_i].label,
                      (int)len, data, want);
    imap_mime_destroy(&m);
    imap_parse_destroy(&p);
    buf_free(&cmd);
    buf_free(&scratch);
}
END_TEST

/* Nesting and part count are bounded. */
START_TEST(test_mime_limits)
{
    buf_t msg = BUF_INIT, b = BUF_INIT;
    imap_mime_t *m;
    size_t opened = 0, texts = 0;

    for (int i = 0; i < 40; i++)
        buf_printf(&msg,
                   "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                   "--b%d\r\n",
                   i, i);
    buf_adds(&msg, "\r\ndeep\r\n");
    m = imap_mime_parse(msg.data, msg.len);
    imap_mime_bodystructure(m, true, &b);
    for (size_t i = 0; i < b.len; i++)
        opened += b.data[i] == '(' && b.data[i + 1] == '(';
    ck_assert_uint_le(opened, IMAP_MIME_DEPTH_MAX + 1);
    ck_assert_ptr_nonnull(strstr(b.data, "\"APPLICATION\" \"OCTET-STREAM\""));
    imap_mime_destroy(&m);

    buf_reset(&msg);
    buf_reset(&b);
    buf_adds(&msg, "Content-Type: multipart/mixed; boundary=p\r\n\r\n");
    for (int i = 0; i < 2000; i++)
        buf_adds(&msg, "--p\r\n\r\nx\r\n");
    buf_adds(&msg, "--p--\r\n");
    m = imap_mime_parse(msg.data, msg.len);
    imap_mime_bodystructure(m, false, &b);
    for (const char *q = b.data; (q = strstr(q, "\"TEXT\"")) != NULL; q++)
        texts++;
    ck_assert_uint_le(texts, IMAP_MIME_PARTS_MAX);
    ck_assert_uint_ge(texts, IMAP_MIME_PARTS_MAX - 2);
    imap_mime_destroy(&m);
    buf_free(&msg);
    buf_free(&b);
}
END_TEST

static Suite *
imap_server_suite(void)
{
    Suite *s = suite_create("imap_server");
    TCase *tc;

    tc = tcase_create("scripts");
    tcase_add_loop_test(tc, test_script, 0, NROWS(scripts));
    tcase_add_loop_test(tc, test_script_split, 0, NROWS(scripts));
    tcase_add_test(tc, test_nul);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_test(tc, test_literal_too_large);
    tcase_add_test(tc, test_append_dropped);
    tcase_add_test(tc, test_literal_flood);
    tcase_add_test(tc, test_line_limit);
    tcase_add_test(tc, test_command_limit);
    tcase_add_test(tc, test_held_limit);
    tcase_add_test(tc, test_event_lifetime_backpressure);
    tcase_add_test(tc, test_backpressure_output);
    suite_add_tcase(s, tc);

    tc = tcase_create("unsolicited");
    tcase_add_test(tc, test_unsolicited);
    tcase_add_test(tc, test_unsolicited_before_greeting);
    suite_add_tcase(s, tc);

    tc = tcase_create("api");
    tcase_add_test(tc, test_greetings);
    tcase_add_test(tc, test_state);
    tcase_add_test(tc, test_take_input);
    tcase_add_test(tc, test_close_during_handshake);
    tcase_add_test(tc, test_close_pending);
    tcase_add_test(tc, test_close_in_fetch);
    tcase_add_test(tc, test_large_fetch_pieces);
    tcase_add_test(tc, test_format);
    tcase_add_test(tc, test_defaults);
    tcase_add_test_raise_signal(tc, test_complete_nothing_pending, SIGABRT);
    tcase_add_test_raise_signal(tc, test_complete_connect_no, SIGABRT);
    tcase_add_test_raise_signal(tc, test_complete_preauth_command, SIGABRT);
    tcase_add_test_raise_signal(tc, test_complete_in_fetch, SIGABRT);
    tcase_add_test_raise_signal(tc, test_untagged_in_fetch, SIGABRT);
    tcase_add_test_raise_signal(tc, test_fetch_item_outside, SIGABRT);
    tcase_add_test_raise_signal(tc, test_tls_started_unasked, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("mime");
    tcase_add_loop_test(tc, test_mime, 0, NROWS(mime_rows));
    tcase_add_loop_test(tc, test_mime_section, 0, NROWS(section_rows));
    tcase_add_test(tc, test_mime_limits);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(imap_server_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
