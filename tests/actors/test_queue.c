/*
 * test_queue.c - samotop-queue: its DSN builder and its backoff alone, then
 * the real actor between a real redis-server, a real broker (samotop-bus),
 * the real samotop-mailbox writing real Maildirs, and a stand-in relay
 * (test_relay_worker: a real bus worker that answers relay.send from a
 * table in Redis, since the real relay needs a remote server).
 *
 * Each DSN the queue sends is parsed here the way a mail client would:
 * CRLF line ends, line lengths, the MIME structure and boundaries, the
 * header fields and the delivery-status fields.
 *
 * Ports 19200-19249 belong to this suite: one block of ten per world
 * (redis on the first port, the broker on the next three): 19200
 * delivery, 19210 expiry, 19220 two queues, 19230 a queue killed, 19240
 * Redis down, 19245 the scripts forgotten.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "actors/queue/queue.h"
#include "actors/queue/queue_dsn.h"
#include "bus.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/err.h"
#include "store.h"
#include "store_keys.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* ---------------------------------------------------------------------
 * A DSN read back as a mail client reads it.
 */

struct dsn_rcpt {
    char final[700], orig[700], action[32], status[32], diag[1024], mta[256],
        retry_until[64], last_attempt[64];
};

struct dsn_parsed {
    char from[256], to[700], subject[256], auto_submitted[64], mime[16];
    char ctype[512], report_type[64], boundary[256];
    char types[3][128];
    char reporting_mta[256], arrival[64], queue_id[64], envid[256];
    struct dsn_rcpt r[8];
    int nr, nparts;
    char human[8192];
    char part3[8192];
    size_t part3_len;
    char err[256];
};

static int
dsn_fail(struct dsn_parsed *d, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(d->err, sizeof(d->err), fmt, ap);
    va_end(ap);
    return -1;
}

/* The value of field name in the header block [p, p+n), unfolded. */
static bool
field(const char *p, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name), o = 0;
    const char *end = p + n, *line = p;

    out[0] = '\0';
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));

        eol = eol ? eol + 1 : end;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 &&
            line[nl] == ':') {
            const char *v = line + nl + 1;

            for (;;) {
                while (v < eol && (*v == ' ' || *v == '\t'))
                    v++;
                while (v < eol && *v != '\r' && *v != '\n' && o + 1 < outlen)
                    out[o++] = *v++;
                if (eol < end && (*eol == ' ' || *eol == '\t')) {
                    if (o + 1 < outlen)
                        out[o++] = ' ';
                    v = eol;
                    eol = memchr(v, '\n', (size_t)(end - v));
                    eol = eol ? eol + 1 : end;
                    continue;
                }
                break;
            }
            out[o] = '\0';
            return true;
        }
        line = eol;
    }
    return false;
}

/* The parameter name="value" (or name=value) of a field value. */
static void
param(const char *v, const char *name, char *out, size_t outlen)
{
    char pat[64];
    const char *p;
    size_t o = 0;

    out[0] = '\0';
    snprintf(pat, sizeof(pat), "%s=", name);
    if ((p = strcasestr(v, pat)) == NULL)
        return;
    p += strlen(pat);
    if (*p == '"') {
        for (p++; *p && *p != '"' && o + 1 < outlen;)
            out[o++] = *p++;
    } else {
        for (; *p && *p != ';' && *p != ' ' && o + 1 < outlen;)
            out[o++] = *p++;
    }
    out[o] = '\0';
}

static const char *
find(const char *p, size_t n, const char *s)
{
    size_t sl = strlen(s);

    for (size_t i = 0; i + sl <= n; i++)
        if (memcmp(p + i, s, sl) == 0)
            return p + i;
    return NULL;
}

static void
copy_out(char *out, size_t outlen, const char *p, size_t n, size_t *len)
{
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    if (len)
        *len = n;
}

/* Reads the delivery-status part: a per-message block, then blocks of
 * per-recipient fields, separated by empty lines. */
static int
parse_status(struct dsn_parsed *d, const char *p, size_t n)
{
    const char *end = p + n, *blk = p;
    int k = 0;

    while (blk < end) {
        const char *sep = find(blk, (size_t)(end - blk), "\r\n\r\n");
        size_t bl = sep ? (size_t)(sep - blk) + 2 : (size_t)(end - blk);

        if (bl > 2) {
            if (k == 0) {
                field(blk, bl, "Reporting-MTA", d->reporting_mta,
                      sizeof(d->reporting_mta));
                field(blk, bl, "Arrival-Date", d->arrival, sizeof(d->arrival));
                field(blk, bl, "X-Samotop-Queue-ID", d->queue_id,
                      sizeof(d->queue_id));
                field(blk, bl, "Original-Envelope-Id", d->envid,
                      sizeof(d->envid));
            } else if (d->nr < 8) {
                struct dsn_rcpt *r = &d->r[d->nr++];

                if (!field(blk, bl, "Final-Recipient", r->final,
                           sizeof(r->final)))
                    return dsn_fail(d,
                                    "recipient block %d: no "
                                    "Final-Recipient",
                                    k);
                if (!field(blk, bl, "Action", r->action, sizeof(r->action)) ||
                    !field(blk, bl, "Status", r->status, sizeof(r->status)))
                    return dsn_fail(d,
                                    "recipient block %d: no Action or "
                                    "Status",
                                    k);
                field(blk, bl, "Original-Recipient", r->orig, sizeof(r->orig));
                field(blk, bl, "Diagnostic-Code", r->diag, sizeof(r->diag));
                field(blk, bl, "Remote-MTA", r->mta, sizeof(r->mta));
                field(blk, bl, "Will-Retry-Until", r->retry_until,
                      sizeof(r->retry_until));
                field(blk, bl, "Last-Attempt-Date", r->last_attempt,
                      sizeof(r->last_attempt));
            }
            k++;
        }
        blk = sep ? sep + 4 : end;
    }
    if (d->reporting_mta[0] == '\0')
        return dsn_fail(d, "no Reporting-MTA");
    return 0;
}

static int
dsn_parse(const char *p, size_t n, struct dsn_parsed *d)
{
    const char *hend, *body, *end = p + n, *cur;
    char delim[300];
    size_t line = 0;

    memset(d, 0, sizeof(*d));
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (i == 0 || p[i - 1] != '\r')
                return dsn_fail(d, "bare LF at offset %zu", i);
            if (i - line - 1 > 998)
                return dsn_fail(d, "line of %zu octets at %zu", i - line - 1,
                                line);
            line = i + 1;
        } else if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n')) {
            return dsn_fail(d, "bare CR at offset %zu", i);
        }
    }
    if (n == 0 || p[n - 1] != '\n')
        return dsn_fail(d, "does not end with CRLF");
    hend = find(p, n, "\r\n\r\n");
    if (hend == NULL)
        return dsn_fail(d, "no end of header");
    body = hend + 4;
    field(p, (size_t)(body - p), "From", d->from, sizeof(d->from));
    field(p, (size_t)(body - p), "To", d->to, sizeof(d->to));
    field(p, (size_t)(body - p), "Subject", d->subject, sizeof(d->subject));
    field(p, (size_t)(body - p), "Auto-Submitted", d->auto_submitted,
          sizeof(d->auto_submitted));
    field(p, (size_t)(body - p), "MIME-Version", d->mime, sizeof(d->mime));
    if (!field(p, (size_t)(body - p), "Content-Type", d->ctype,
               sizeof(d->ctype)))
        return dsn_fail(d, "no Content-Type");
    if (strncasecmp(d->ctype, "multipart/report;", 17) != 0)
        return dsn_fail(d, "Content-Type is %s", d->ctype);
    param(d->ctype, "report-type", d->report_type, sizeof(d->report_type));
    param(d->ctype, "boundary", d->boundary, sizeof(d->boundary));
    if (d->boundary[0] == '\0')
        return dsn_fail(d, "no boundary");

    /* The delimiters are CRLF "--" boundary; the first may follow the
     * header's empty line directly. */
    snprintf(delim, sizeof(delim), "\r\n--%s", d->boundary);
    cur = find(hend, (size_t)(end - hend), delim);
    while (cur) {
        const char *after = cur + strlen(delim), *next, *ph;

        if (after + 2 <= end && after[0] == '-' && after[1] == '-') {
            if (d->nparts != 3)
                return dsn_fail(d, "%d parts, want 3", d->nparts);
            if (find(after, (size_t)(end - after), delim))
                return dsn_fail(d, "text after the close delimiter");
            return 0;
        }
        if (after + 2 > end || after[0] != '\r' || after[1] != '\n')
            return dsn_fail(d, "delimiter not followed by CRLF");
        after += 2;
        next = find(after, (size_t)(end - after), delim);
        if (next == NULL)
            return dsn_fail(d, "no close delimiter");
        if (d->nparts >= 3)
            return dsn_fail(d, "more than 3 parts");
        ph = find(after, (size_t)(next - after) + 2, "\r\n\r\n");
        if (ph == NULL)
            return dsn_fail(d, "part %d has no header", d->nparts + 1);
        field(after, (size_t)(ph - after) + 2, "Content-Type",
              d->types[d->nparts], sizeof(d->types[0]));
        if (d->nparts == 0)
            copy_out(d->human, sizeof(d->human), ph + 4,
                     (size_t)(next - ph - 4), NULL);
        if (d->nparts == 1 &&
            parse_status(d, ph + 4, (size_t)(next - ph - 4) + 2) != 0)
            return -1;
        if (d->nparts == 2)
            copy_out(d->part3, sizeof(d->part3), ph + 4,
                     (size_t)(next - ph - 4), &d->part3_len);
        d->nparts++;
        cur = next;
    }
    return dsn_fail(d, "no delimiter");
}

/* ---------------------------------------------------------------------
 * The DSN builder alone.
 */

#define SMALL_MSG                                                              \
    "Received: from client (127.0.0.1) by mx.test\r\n"                         \
    "From: Carol <carol@example.test>\r\n"                                     \
    "To: bob@remote.test\r\n"                                                  \
    "Subject: lunch\r\n"                                                       \
    "\r\n"                                                                     \
    "Shall we?\r\n"

struct dsn_row {
    const char *label;
    enum queue_action act1, act2; /* two recipients; NONE: one */
    const char *ret;
    size_t full_max;
    const char *text;  /* the remote reply's text */
    const char *rcpt2; /* the second recipient's address */
    const char *orcpt;
    const char *want_subject;
    const char *want_part3; /* its Content-Type */
    bool want_body;         /* "Shall we?" returned */
    const char *want_orig;  /* Original-Recipient, or NULL: none */
    const char *want_report_type;
    int want_rc;
};

static const struct dsn_row dsn_rows[] = {
    {"failed, RET=FULL", QUEUE_ACT_FAILED, QUEUE_ACT_NONE, "FULL", 10,
     "User unknown", NULL, NULL, "Undelivered Mail Returned to Sender",
     "message/rfc822", true, NULL, "delivery-status", 0},
    {"failed, RET=HDRS", QUEUE_ACT_FAILED, QUEUE_ACT_NONE, "HDRS", 1 << 20,
     "User unknown", NULL, NULL, "Undelivered Mail Returned to Sender",
     "text/rfc822-headers", false, NULL, "delivery-status", 0},
    {"failed, no RET, small", QUEUE_ACT_FAILED, QUEUE_ACT_NONE, NULL, 1 << 20,
     "User unknown", NULL, NULL, "Undelivered Mail Returned to Sender",
     "message/rfc822", true, NULL, "delivery-status", 0},
    {"failed, no RET, big", QUEUE_ACT_FAILED, QUEUE_ACT_NONE, NULL, 10,
     "User unknown", NULL, NULL, "Undelivered Mail Returned to Sender",
     "text/rfc822-headers", false, NULL, "delivery-status", 0},
    {"two failed, ORCPT decoded", QUEUE_ACT_FAILED, QUEUE_ACT_FAILED, NULL,
     1 << 20, "User unknown", "dan@remote.test", "rfc822;Bob+2Bx@remote.test",
     "Undelivered Mail Returned to Sender", "message/rfc822", true,
     "rfc822;Bob+x@remote.test", "delivery-status", 0},
    {"delayed returns the header only", QUEUE_ACT_DELAYED, QUEUE_ACT_NONE,
     "FULL", 1 << 20, "try later", NULL, NULL,
     "Delayed Mail (still being retried)", "text/rfc822-headers", false, NULL,
     "delivery-status", 0},
    {"delivered and relayed share one", QUEUE_ACT_DELIVERED, QUEUE_ACT_RELAYED,
     "FULL", 1 << 20, "ok", "dan@remote.test", NULL,
     "Successful Mail Delivery Report", "text/rfc822-headers", false, NULL,
     "delivery-status", 0},
    {"a reply that tries to add a header", QUEUE_ACT_FAILED, QUEUE_ACT_NONE,
     NULL, 1 << 20, "no\r\nX-Evil: 1\r\n\r\n--x", NULL, NULL,
     "Undelivered Mail Returned to Sender", "message/rfc822", true, NULL,
     "delivery-status", 0},
    {"a very long reply", QUEUE_ACT_FAILED, QUEUE_ACT_NONE, NULL, 1 << 20,
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
     NULL, NULL, "Undelivered Mail Returned to Sender", "message/rfc822", true,
     NULL, "delivery-status", 0},
    {"UTF-8 recipient: global types", QUEUE_ACT_FAILED, QUEUE_ACT_FAILED, NULL,
     1 << 20, "User unknown", "j\xc3\xb6rg@remote.test", NULL,
     "Undelivered Mail Returned to Sender", "message/global", true, NULL,
     "global-delivery-status", 0},
    {"failed and delayed do not mix", QUEUE_ACT_FAILED, QUEUE_ACT_DELAYED, NULL,
     1 << 20, "x", "dan@remote.test", NULL, NULL, NULL, false, NULL, NULL,
     ERR_INVAL},
};

static const char *
act_word(enum queue_action a)
{
    switch (a) {
    case QUEUE_ACT_FAILED:
        return "failed";
    case QUEUE_ACT_DELAYED:
        return "delayed";
    case QUEUE_ACT_DELIVERED:
        return "delivered";
    case QUEUE_ACT_RELAYED:
        return "relayed";
    default:
        return "none";
    }
}

START_TEST(test_dsn_build)
{
    const struct dsn_row *row = &dsn_rows[_i];
    struct queue_dsn_rcpt r[2] = {
        {.final_rcpt = "bob@remote.test",
         .orcpt = row->orcpt,
         .rcpt = "Bob@remote.test",
         .action = row->act1,
         .status = row->act1 == QUEUE_ACT_FAILED    ? "5.1.1"
                   : row->act1 == QUEUE_ACT_DELAYED ? "4.3.0"
                                                    : "2.0.0",
         .code = row->act1 == QUEUE_ACT_FAILED    ? 550
                 : row->act1 == QUEUE_ACT_DELAYED ? 451
                                                  : 250,
         .ecode = row->act1 == QUEUE_ACT_FAILED    ? "5.1.1"
                  : row->act1 == QUEUE_ACT_DELAYED ? "4.3.0"
                                                   : "2.0.0",
         .text = row->text,
         .mx = "mx.remote.test:25",
         .last_attempt_ms = 1700000100000,
         .will_retry_until_ms = 1700432000000},
        {.final_rcpt = row->rcpt2 ? row->rcpt2 : "dan@remote.test",
         .rcpt = NULL,
         .action = row->act2,
         .status = "5.1.1",
         .code = 550,
         .ecode = "5.1.1",
         .text = "gone",
         .mx = "[192.0.2.1]:25"}};
    struct queue_dsn d = {.hostname = "mx.test",
                          .queue_id = "1700000000-0123456789abcdef",
                          .envid = "env 1",
                          .sender = "carol@example.test",
                          .ret = row->ret,
                          .full_max = row->full_max,
                          .arrival_ms = 1700000000000,
                          .now_ms = 1700010000000,
                          .message = SMALL_MSG,
                          .message_len = strlen(SMALL_MSG),
                          .rcpts = r,
                          .nrcpts = row->act2 == QUEUE_ACT_NONE ? 1 : 2,
                          .boundary = "1700000001-fedcba9876543210/dsn"};
    buf_t out = BUF_INIT;
    struct dsn_parsed *p = calloc(1, sizeof(*p));
    int rc = queue_dsn_build(&d, &out);

    ck_assert_msg(rc == row->want_rc, "%s: got %d, want %d", row->label, rc,
                  row->want_rc);
    if (rc != 0) {
        buf_free(&out);
        free(p);
        return;
    }
    ck_assert_msg(dsn_parse(out.data, out.len, p) == 0, "%s: %s\n%s",
                  row->label, p->err, out.data);
    ck_assert_msg(strcmp(p->subject, row->want_subject) == 0,
                  "%s: subject got %s, want %s", row->label, p->subject,
                  row->want_subject);
    ck_assert_str_eq(p->from, "Mail Delivery System <MAILER-DAEMON@mx.test>");
    ck_assert_str_eq(p->to, "<carol@example.test>");
    ck_assert_str_eq(p->auto_submitted, "auto-replied");
    ck_assert_str_eq(p->mime, "1.0");
    ck_assert_msg(strcmp(p->report_type, row->want_report_type) == 0,
                  "%s: report-type got %s", row->label, p->report_type);
    ck_assert_msg(strncmp(p->types[0], "text/plain", 10) == 0,
                  "%s: part 1 is %s", row->label, p->types[0]);
    ck_assert_msg(strstr(p->types[1], "delivery-status") != NULL,
                  "%s: part 2 is %s", row->label, p->types[1]);
    ck_assert_msg(strcmp(p->types[2], row->want_part3) == 0,
                  "%s: part 3 got %s, want %s", row->label, p->types[2],
                  row->want_part3);
    ck_assert_msg((strstr(p->part3, "Shall we?") != NULL) == row->want_body,
                  "%s: body returned: %d", row->label, !row->want_body);
    ck_assert_msg(strstr(p->part3, "Subject: lunch") != NULL,
                  "%s: no header returned", row->label);
    ck_assert_str_eq(p->reporting_mta, "dns; mx.test");
    ck_assert_str_eq(p->queue_id, "1700000000-0123456789abcdef");
    ck_assert_str_eq(p->envid, "env+201");
    ck_assert_str_eq(p->arrival, "Tue, 14 Nov 2023 22:13:20 +0000");
    ck_assert_int_eq(p->nr, (int)d.nrcpts);
    ck_assert_msg(strstr(p->r[0].final, "bob@remote.test") != NULL &&
                      (strncmp(p->r[0].final, "rfc822; ", 8) == 0 ||
                       strncmp(p->r[0].final, "utf-8; ", 7) == 0),
                  "%s: Final-Recipient %s", row->label, p->r[0].final);
    ck_assert_str_eq(p->r[0].action, act_word(row->act1));
    ck_assert_str_eq(p->r[0].mta, "dns; mx.remote.test");
    ck_assert_str_eq(p->r[0].last_attempt, "Tue, 14 Nov 2023 22:15:00 +0000");
    ck_assert_msg(strncmp(p->r[0].diag, "smtp; ", 6) == 0,
                  "%s: Diagnostic-Code %s", row->label, p->r[0].diag);
    ck_assert_msg(strlen(p->r[0].diag) < 480, "%s: diag of %zu octets",
                  row->label, strlen(p->r[0].diag));
    if (row->want_orig)
        ck_assert_str_eq(p->r[0].orig, row->want_orig);
    else
        ck_assert_str_eq(p->r[0].orig, "");
    if (row->act1 == QUEUE_ACT_DELAYED)
        ck_assert_str_eq(p->r[0].retry_until,
                         "Sun, 19 Nov 2023 22:13:20 +0000");
    if (d.nrcpts == 2) {
        ck_assert_str_eq(p->r[1].action, act_word(row->act2));
        ck_assert_str_eq(p->r[1].mta, "dns; [192.0.2.1]");
    }
    /* Nothing a reply says may start a header field of its own. */
    ck_assert_ptr_null(strstr(out.data, "\r\nX-Evil"));
    ck_assert_msg(strstr(p->human, "bob@remote.test") != NULL,
                  "%s: notice does not name the recipient", row->label);
    buf_free(&out);
    free(p);
}
END_TEST

/* ---------------------------------------------------------------------
 * The backoff alone.
 */

struct retry_row {
    const char *label;
    int attempts;
    long min_s, max_s;
    uint32_t rnd;
    int64_t want_lo, want_hi;
};

static const struct retry_row retry_rows[] = {
    {"first, no jitter drawn", 1, 60, 3600, 0, 54000, 54000},
    {"first, most jitter", 1, 60, 3600, UINT32_MAX, 65999, 66000},
    {"second doubles", 2, 60, 3600, 1u << 31, 120000, 120000},
    {"fifth", 5, 60, 3600, 1u << 31, 960000, 960000},
    {"capped", 7, 60, 3600, 1u << 31, 3600000, 3600000},
    {"capped, jitter cannot pass the cap", 30, 60, 3600, UINT32_MAX, 3600000,
     3600000},
    {"attempts beyond any shift", 100000, 1, 2, 0, 1800, 1800},
    {"tests' small settings", 3, 1, 2, 1u << 31, 2000, 2000},
};

START_TEST(test_retry_delay)
{
    const struct retry_row *row = &retry_rows[_i];
    int64_t got =
        queue_retry_delay_ms(row->attempts, row->min_s, row->max_s, row->rnd);

    ck_assert_msg(got >= row->want_lo && got <= row->want_hi,
                  "%s: got %lld, want %lld..%lld", row->label, (long long)got,
                  (long long)row->want_lo, (long long)row->want_hi);
}
END_TEST

/* Every doubling step stays above the last, whatever the jitter. */
START_TEST(test_retry_grows)
{
    for (int a = 1; a < 6; a++) {
        int64_t hi = queue_retry_delay_ms(a, 60, 1000000, UINT32_MAX);
        int64_t lo = queue_retry_delay_ms(a + 1, 60, 1000000, 0);

        ck_assert_msg(lo > hi, "attempt %d: %lld after %lld", a + 1,
                      (long long)lo, (long long)hi);
    }
}
END_TEST

/* ---------------------------------------------------------------------
 * The real actor.
 */

struct world {
    int base;
    pid_t redis, bus, mailbox, relay, queue[2];
    char dir[64], data[96], clients[64];
    char env[32][160];
    const char *envp[33];
};

/* Set up once per TCase in the parent; each forked test inherits it. */
static struct world W;

#define RINT(s, ...) test_redis_int(s, __VA_ARGS__, NULL)

static void
redis_fill(int port)
{
    store_t *s = test_redis_connect(port, 5000);
    char k[STORE_KEY_MAX];
    const char *users[] = {"alice", "carol", "dave", "erin", "frank",
                           "gina",  "hank",  "ivan", "judy"};

    store_reply_free(&(store_reply_t *){test_redis_cmd(s, "FLUSHALL", NULL)});
    RINT(s, "SADD", store_key_domains(k), "example.test");
    RINT(s, "HSET", store_key_domain(k, "example.test"), "created",
         "1700000000", "catchall", "", "disabled", "0");
    for (size_t i = 0; i < NROWS(users); i++) {
        RINT(s, "SADD", store_key_users(k, "example.test"), users[i]);
        RINT(s, "HSET", store_key_user(k, "example.test", users[i]), "pw",
             "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA", "disabled", "0", "created",
             "1700000000");
    }
    store_destroy(&s);
}

static pid_t
spawn_bin(const char *name, const char *inst)
{
    char path[4096];
    const char *argv[] = {path, "--instance", inst, NULL};

    snprintf(path, sizeof(path), "%s", test_bin(name));
    return test_spawn(argv, W.envp);
}

static void
queue_start(int i)
{
    W.queue[i] = spawn_bin("samotop-queue", i == 0 ? "q0" : "q1");
}

/* Starts a world on ports base .. base+3 with extra "K=V" settings
 * (NULL-terminated; may be NULL) and nqueues queue processes. */
static void
world_start_n(int base, const char *const *extra, int nqueues)
{
    int n = 0;

    memset(&W, 0, sizeof(W));
    W.base = base;
    snprintf(W.dir, sizeof(W.dir), "/tmp/samotop-qtest-XXXXXX");
    ck_assert_msg(mkdtemp(W.dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(W.data, sizeof(W.data), "%s/var", W.dir);
    snprintf(W.clients, sizeof(W.clients), "tcp://127.0.0.1:%d", base + 1);
    snprintf(W.env[n++], 160, "SAMOTOP_BROKER_CLIENTS=%s", W.clients);
    snprintf(W.env[n++], 160, "SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(W.env[n++], 160, "SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:%d",
             base + 3);
    snprintf(W.env[n++], 160, "SAMOTOP_BUS_CLIENTS=%s", W.clients);
    snprintf(W.env[n++], 160, "SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(W.env[n++], 160, "SAMOTOP_BUS_TRACE=tcp://127.0.0.1:%d", base + 3);
    snprintf(W.env[n++], 160, "SAMOTOP_BUS_HEARTBEAT_MS=100");
    snprintf(W.env[n++], 160, "SAMOTOP_REDIS_PORT=%d", base);
    snprintf(W.env[n++], 160, "SAMOTOP_DATA=%s", W.data);
    snprintf(W.env[n++], 160, "SAMOTOP_HOSTNAME=mx.test");
    snprintf(W.env[n++], 160, "SAMOTOP_QUEUE_SCAN_MS=100");
    snprintf(W.env[n++], 160, "SAMOTOP_QUEUE_RETRY_MIN_S=1");
    snprintf(W.env[n++], 160, "SAMOTOP_QUEUE_RETRY_MAX_S=2");
    /* The mailbox's IMAP and LMTP doors off: never the local profile's
     * 2143, 2993 and 2424. */
    snprintf(W.env[n++], 160, "SAMOTOP_LISTEN_IMAP=");
    snprintf(W.env[n++], 160, "SAMOTOP_LISTEN_IMAPS=");
    snprintf(W.env[n++], 160, "SAMOTOP_LISTEN_LMTP=");
    for (int i = 0; extra && extra[i]; i++)
        snprintf(W.env[n++], 160, "%s", extra[i]);
    for (int i = 0; i < n; i++)
        W.envp[i] = W.env[i];
    W.envp[n] = NULL;
    W.redis = test_redis_start(base);
    redis_fill(base);
    W.bus = spawn_bin("samotop-bus", "t");
    W.mailbox = spawn_bin("samotop-mailbox", "m");
    W.relay = spawn_bin("test_relay_worker", "r");
    for (int i = 0; i < nqueues; i++)
        queue_start(i);
}

static void
world_stop(void)
{
    test_stop_clean(&W.queue[0], "samotop-queue", 8000);
    test_stop_clean(&W.queue[1], "samotop-queue (second)", 8000);
    test_stop_clean(&W.relay, "test_relay_worker", 8000);
    test_stop_clean(&W.mailbox, "samotop-mailbox", 8000);
    if (W.bus > 0)
        test_stop(W.bus, SIGTERM, 5000);
    if (W.redis > 0)
        test_stop(W.redis, SIGTERM, 5000);
    if (W.dir[0])
        test_rm_tree(W.dir);
    memset(&W, 0, sizeof(W));
}

static void
world_deliver_start(void)
{
    world_start_n(19200, NULL, 1);
}

/* A client of this world's broker, once every service answers a ping
 * from the process this world started. */
static bus_client_t *
world_client(void)
{
    static const char *const services[] = {"queue", "mailbox", "relay"};
    char why[256];
    bus_client_t *c =
        bus_client_new(NULL, W.clients, 64 << 20, why, sizeof(why));
    int64_t until = test_now_ms() + 15000;

    ck_assert_msg(c != NULL, "bus_client_new: %s", why);
    for (size_t i = 0; i < NROWS(services); i++) {
        char type[32];

        snprintf(type, sizeof(type), "%s.ping", services[i]);
        for (;;) {
            envelope_t *req = envelope_new(type, NULL, 500), *reply = NULL;

            if (bus_client_call(c, &req, &reply, why, sizeof(why)) == 0) {
                envelope_destroy(&reply);
                break;
            }
            ck_assert_msg(test_now_ms() < until,
                          "%s never answered: %s (another run on ports "
                          "%d-%d?)",
                          services[i], why, W.base, W.base + 3);
            usleep(50000);
        }
    }
    return c;
}

struct to {
    const char *mailbox, *addr, *notify, *orcpt;
};

struct sub {
    const char *from, *msg, *ret, *envid, *user;
    struct to to[6];
};

static value_t *
notify_array(const char *list)
{
    value_t *arr = value_new_array();
    char *copy = strdup(list), *save = NULL;

    for (char *w = strtok_r(copy, ",", &save); w;
         w = strtok_r(NULL, ",", &save)) {
        value_t *s = value_new_str(w);

        value_push_take(arr, &s);
    }
    free(copy);
    return arr;
}

/* Sends queue.submit; returns the reply (caller frees). */
static envelope_t *
submit(bus_client_t *c, const struct sub *s)
{
    envelope_t *req = envelope_new("queue.submit", NULL, 5000), *reply = NULL;
    value_t *body = envelope_body(req), *rcpts = value_new_array(), *v;
    const char *msg = s->msg ? s->msg : SMALL_MSG;
    char why[256];
    int rc;

    value_set_str(body, ENV_KEY_MAIL_FROM, s->from);
    v = value_new_bin(msg, strlen(msg));
    value_set_take(body, ENV_KEY_MESSAGE, &v);
    if (s->ret)
        value_set_str(body, ENV_KEY_RET, s->ret);
    if (s->envid)
        value_set_str(body, ENV_KEY_ENVID, s->envid);
    if (s->user)
        value_set_str(body, ENV_KEY_USER, s->user);
    value_set_str(body, ENV_KEY_CLIENT_IP, "127.0.0.1");
    for (size_t i = 0; i < NROWS(s->to) && (s->to[i].mailbox || s->to[i].addr);
         i++) {
        value_t *item = value_new_map();

        if (s->to[i].mailbox)
            value_set_str(item, ENV_KEY_MAILBOX, s->to[i].mailbox);
        if (s->to[i].addr)
            value_set_str(item, ENV_KEY_ADDR, s->to[i].addr);
        value_set_str(item, ENV_KEY_RCPT,
                      s->to[i].mailbox ? s->to[i].mailbox : s->to[i].addr);
        if (s->to[i].notify) {
            v = notify_array(s->to[i].notify);
            value_set_take(item, ENV_KEY_NOTIFY, &v);
        }
        if (s->to[i].orcpt)
            value_set_str(item, ENV_KEY_ORCPT, s->to[i].orcpt);
        value_push_take(rcpts, &item);
    }
    value_set_take(body, ENV_KEY_RCPTS, &rcpts);
    rc = bus_client_call(c, &req, &reply, why, sizeof(why));
    ck_assert_msg(rc == 0, "queue.submit: %s: %s", err_name(rc), why);
    return reply;
}

/* Submits and expects 250; the queue id into id. */
static void
submit_ok(bus_client_t *c, const struct sub *s, char id[QUEUE_ID_MAX])
{
    envelope_t *reply = submit(c, s);
    const char *qid = envelope_get_str(reply, ENV_KEY_QUEUE_ID);

    ck_assert_msg(envelope_code(reply) == 250, "submit: got %d %s",
                  envelope_code(reply), envelope_get_str(reply, ENV_KEY_TEXT));
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "2.0.0");
    ck_assert_msg(qid && queue_msg_id_ok(qid), "queue_id %s", qid);
    snprintf(id, QUEUE_ID_MAX, "%s", qid);
    envelope_destroy(&reply);
}

static void
relay_set(const char *addr, const char *what)
{
    store_t *s = test_redis_connect(W.base, 1000);

    RINT(s, "HSET", "samotop-test:relay:codes", addr, what);
    store_destroy(&s);
}

static long long
relay_count(const char *addr)
{
    store_t *s = test_redis_connect(W.base, 1000);
    long long n = RINT(s, "HGET", "samotop-test:relay:count", addr);

    store_destroy(&s);
    return n;
}

/* The times (unix ms) of the stand-in's log lines for addr, and what each
 * line's mail_from was, into t[] and from[]; returns the count. */
static int
relay_log(const char *addr, long long *t, char from[][128], int max)
{
    store_t *s = test_redis_connect(W.base, 1000);
    store_reply_t *r =
        test_redis_cmd(s, "LRANGE", "samotop-test:relay:log", "0", "-1", NULL);
    int n = 0;

    for (size_t i = 0; i < store_reply_count(r) && n < max; i++) {
        char a[700], w[32], q[64], f[128];
        long long ms;

        if (sscanf(store_reply_str(store_reply_at(r, i), NULL),
                   "%lld %699s %31s %63s %127s", &ms, a, w, q, f) != 5 ||
            strcmp(a, addr) != 0)
            continue;
        t[n] = ms;
        if (from)
            snprintf(from[n], 128, "%s", f);
        n++;
    }
    store_reply_free(&r);
    store_destroy(&s);
    return n;
}

/* Whether every key of message id is gone. */
static bool
queue_gone(const char *id)
{
    store_t *s = test_redis_connect(W.base, 1000);
    char k1[STORE_KEY_MAX], k2[STORE_KEY_MAX], k3[STORE_KEY_MAX],
        k4[STORE_KEY_MAX], k5[STORE_KEY_MAX];
    long long n = RINT(
        s, "EXISTS", store_key_queue_msg(k1, id), store_key_queue_body(k2, id),
        store_key_queue_rcpts(k3, id), store_key_queue_lease(k4, id));
    store_reply_t *r =
        test_redis_cmd(s, "ZSCORE", store_key_queue_due(k5), id, NULL);
    bool gone = n == 0 && store_reply_type(r) == STORE_NIL;

    store_reply_free(&r);
    store_destroy(&s);
    return gone;
}

static bool
wait_gone(const char *id, int ms)
{
    int64_t until = test_now_ms() + ms;

    while (test_now_ms() < until) {
        if (queue_gone(id))
            return true;
        usleep(50000);
    }
    return false;
}

/* Names of the files in the Maildir new/ of mailbox (local@example.test),
 * sorted; returns the count (0 when there is no folder yet). */
static int
maildir_files(const char *local, char names[][256], int max)
{
    char dir[512];
    DIR *d;
    struct dirent *e;
    int n = 0;

    snprintf(dir, sizeof(dir), "%s/mail/example.test/%s/new", W.data, local);
    if ((d = opendir(dir)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL && n < max)
        if (e->d_name[0] != '.')
            snprintf(names[n++], 256, "%s", e->d_name);
    closedir(d);
    qsort(names, (size_t)n, 256, (int (*)(const void *, const void *))strcmp);
    return n;
}

static int
wait_files(const char *local, int want, int ms)
{
    char names[16][256];
    int64_t until = test_now_ms() + ms;
    int n;

    while ((n = maildir_files(local, names, 16)) < want &&
           test_now_ms() < until)
        usleep(50000);
    return n;
}

/* The content of the i-th file (sorted by name) in local's new/; caller
 * frees. */
static char *
maildir_read(const char *local, int i, size_t *len)
{
    char names[16][256], path[1024];
    FILE *f;
    char *buf;
    long n;

    ck_assert_int_gt(maildir_files(local, names, 16), i);
    snprintf(path, sizeof(path), "%s/mail/example.test/%s/new/%s", W.data,
             local, names[i]);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Reads the DSN in local's Maildir file i: it came from <> (the mailbox
 * wrote "Return-Path: <>"), and it parses. */
static struct dsn_parsed *
read_dsn(const char *local, int i)
{
    size_t len;
    char *text = maildir_read(local, i, &len);
    const char *rp = "Return-Path: <>\r\n";
    struct dsn_parsed *p = calloc(1, sizeof(*p));

    ck_assert_msg(strncmp(text, rp, strlen(rp)) == 0,
                  "not from the null sender:\n%.200s", text);
    ck_assert_msg(dsn_parse(text + strlen(rp), len - strlen(rp), p) == 0,
                  "DSN: %s\n%s", p->err, text);
    free(text);
    return p;
}

START_TEST(test_local_delivery)
{
    bus_client_t *c = world_client();
    struct sub s = {.from = "bob@remote.test",
                    .to = {{.mailbox = "alice@example.test"}}};
    char id[QUEUE_ID_MAX], *text;
    size_t len;

    submit_ok(c, &s, id);
    ck_assert_msg(wait_files("alice", 1, 5000) == 1, "not delivered");
    text = maildir_read("alice", 0, &len);
    ck_assert_str_eq(text, "Return-Path: <bob@remote.test>\r\n" SMALL_MSG);
    free(text);
    ck_assert_msg(wait_gone(id, 3000), "%s still queued", id);
    bus_client_destroy(&c);
}
END_TEST

/* Local and remote recipients of one message, two remote domains: one
 * mailbox.deliver and one relay.send per domain. */
START_TEST(test_remote_delivery)
{
    bus_client_t *c = world_client();
    struct sub s = {.from = "judy@example.test",
                    .to = {{.addr = "r1@one.test"},
                           {.addr = "r2@two.test"},
                           {.addr = "R3@One.Test"},
                           {.mailbox = "ivan@example.test"}}};
    char id[QUEUE_ID_MAX], from[4][128];
    long long t[4];

    submit_ok(c, &s, id);
    ck_assert_msg(wait_gone(id, 5000), "%s still queued", id);
    ck_assert_int_eq(relay_count("r1@one.test"), 1);
    ck_assert_int_eq(relay_count("r2@two.test"), 1);
    ck_assert_int_eq(relay_count("R3@One.Test"), 1);
    ck_assert_int_eq(relay_log("r1@one.test", t, from, 4), 1);
    ck_assert_str_eq(from[0], "judy@example.test");
    ck_assert_int_eq(wait_files("ivan", 1, 1000), 1);
    /* No DSN was asked for: judy has no mail. */
    ck_assert_int_eq(maildir_files("judy", (char[1][256]){{0}}, 1), 0);
    bus_client_destroy(&c);
}
END_TEST

START_TEST(test_retry_then_delivered)
{
    bus_client_t *c = world_client();
    struct sub s = {.from = "dave@example.test",
                    .to = {{.addr = "slow@retry.test"}}};
    char id[QUEUE_ID_MAX];
    long long t[8];
    int n;
    int64_t until;

    relay_set("slow@retry.test", "451");
    submit_ok(c, &s, id);
    until = test_now_ms() + 10000;
    while ((n = relay_log("slow@retry.test", t, NULL, 8)) < 3 &&
           test_now_ms() < until)
        usleep(100000);
    ck_assert_msg(n >= 3, "%d attempts", n);
    ck_assert_msg(!queue_gone(id), "a deferred message left the queue");
    /* retry_min_s 1, doubling, at most 2 s: gaps of about 1 s, then 2. */
    ck_assert_msg(t[1] - t[0] >= 800 && t[1] - t[0] < 1800, "first gap %lld ms",
                  t[1] - t[0]);
    ck_assert_msg(t[2] - t[1] > t[1] - t[0] && t[2] - t[1] >= 1600,
                  "second gap %lld ms after %lld", t[2] - t[1], t[1] - t[0]);
    relay_set("slow@retry.test", "250");
    ck_assert_msg(wait_gone(id, 5000), "%s still queued", id);
    n = relay_log("slow@retry.test", t, NULL, 8);
    ck_assert_int_eq(relay_count("slow@retry.test"), n);
    /* A delay below queue.delay_warn_s sends no DSN. */
    ck_assert_int_eq(maildir_files("dave", (char[1][256]){{0}}, 1), 0);
    bus_client_destroy(&c);
}
END_TEST

START_TEST(test_bounce)
{
    bus_client_t *c = world_client();
    struct sub s = {.from = "carol@example.test",
                    .envid = "E1",
                    .to = {{.addr = "nobody@bounce.test",
                            .orcpt = "rfc822;Nobody@bounce.test"},
                           {.addr = "fine@bounce.test"}}};
    char id[QUEUE_ID_MAX];
    struct dsn_parsed *p;

    relay_set("nobody@bounce.test", "550");
    submit_ok(c, &s, id);
    ck_assert_msg(wait_files("carol", 1, 5000) == 1, "no bounce");
    ck_assert_msg(wait_gone(id, 3000), "%s still queued", id);
    p = read_dsn("carol", 0);
    ck_assert_str_eq(p->from, "Mail Delivery System <MAILER-DAEMON@mx.test>");
    ck_assert_str_eq(p->to, "<carol@example.test>");
    ck_assert_str_eq(p->subject, "Undelivered Mail Returned to Sender");
    ck_assert_str_eq(p->auto_submitted, "auto-replied");
    ck_assert_str_eq(p->report_type, "delivery-status");
    ck_assert_str_eq(p->types[2], "message/rfc822");
    ck_assert_ptr_nonnull(strstr(p->part3, "Shall we?"));
    ck_assert_str_eq(p->reporting_mta, "dns; mx.test");
    ck_assert_str_eq(p->queue_id, id);
    ck_assert_str_eq(p->envid, "E1");
    /* Only the failed recipient is reported; the other was delivered. */
    ck_assert_int_eq(p->nr, 1);
    ck_assert_str_eq(p->r[0].final, "rfc822; nobody@bounce.test");
    ck_assert_str_eq(p->r[0].orig, "rfc822;Nobody@bounce.test");
    ck_assert_str_eq(p->r[0].action, "failed");
    ck_assert_str_eq(p->r[0].status, "5.1.1");
    ck_assert_str_eq(p->r[0].mta, "dns; mx.stand-in.test");
    ck_assert_str_eq(p->r[0].diag, "smtp; 550 5.1.1 Recipient address "
                                   "rejected: User unknown");
    ck_assert_int_eq(relay_count("fine@bounce.test"), 1);
    free(p);
    bus_client_destroy(&c);
}
END_TEST

START_TEST(test_bounce_headers_only)
{
    bus_client_t *c = world_client();
    struct sub s = {.from = "Erin+lists@Example.Test",
                    .ret = "HDRS",
                    .to = {{.addr = "nobody@hdrs.test"}}};
    char id[QUEUE_ID_MAX];
    struct dsn_parsed *p;

    relay_set("nobody@hdrs.test", "550");
    submit_ok(c, &s, id);
    /* To erin's own mailbox: the +tag and the case do not matter. */
    ck_assert_msg(wait_files("erin", 1, 5000) == 1, "no bounce");
    p = read_dsn("erin", 0);
    ck_assert_str_eq(p->types[2], "text/rfc822-headers");
    ck_assert_ptr_nonnull(strstr(p->part3, "Subject: lunch"));
    ck_assert_ptr_null(strstr(p->part3, "Shall we?"));
    free(p);
    ck_assert_msg(wait_gone(id, 3000), "%s still queued", id);
    bus_client_destroy(&c);
}
END_TEST

/* A bounce for a remote sender goes out by relay, from <>. */
START_TEST(test_bounce_remote_sender)
{
    bus_client_t *c = world_client();
    struct sub s = {.from = "someone@far.test",
                    .to = {{.addr = "nobody@remote-bounce.test"}}};
    char id[QUEUE_ID_MAX], from[4][128];
    long long t[4];
    int64_t until = test_now_ms() + 5000;

    relay_set("nobody@remote-bounce.test", "550");
    submit_ok(c, &s, id);
    while (relay_count("someone@far.test") < 1 && test_now_ms() < until)
        usleep(50000);
    ck_assert_int_eq(relay_log("someone@far.test", t, from, 4), 1);
    ck_assert_str_eq(from[0], "<>");
    ck_assert_msg(wait_gone(id, 3000), "%s still queued", id);
    bus_client_destroy(&c);
}
END_TEST

/* Neither the null sender nor NOTIFY=NEVER gets a bounce. */
START_TEST(test_no_bounce)
{
    bus_client_t *c = world_client();
    struct sub s1 = {.from = "", .to = {{.addr = "nobody@nobounce.test"}}};
    struct sub s2 = {
        .from = "frank@example.test",
        .to = {{.addr = "nobody@nobounce.test", .notify = "NEVER"}}};
    struct sub s3 = {
        .from = "frank@example.test",
        .to = {{.addr = "nobody@nobounce.test", .notify = "SUCCESS,DELAY"}}};
    char id1[QUEUE_ID_MAX], id2[QUEUE_ID_MAX], id3[QUEUE_ID_MAX];

    relay_set("nobody@nobounce.test", "550");
    submit_ok(c, &s1, id1);
    submit_ok(c, &s2, id2);
    submit_ok(c, &s3, id3);
    ck_assert_msg(wait_gone(id1, 5000), "%s still queued", id1);
    ck_assert_msg(wait_gone(id2, 5000), "%s still queued", id2);
    ck_assert_msg(wait_gone(id3, 5000), "%s still queued", id3);
    ck_assert_int_eq(relay_count("nobody@nobounce.test"), 3);
    usleep(500000); /* a DSN would have been queued with the update */
    ck_assert_int_eq(maildir_files("frank", (char[1][256]){{0}}, 1), 0);
    /* Nothing went to the null sender either. */
    ck_assert_int_eq(relay_count(""), 0);
    bus_client_destroy(&c);
}
END_TEST

/* NOTIFY=SUCCESS: "delivered" for a mailbox, "relayed" for the relay. */
START_TEST(test_success_dsn)
{
    bus_client_t *c = world_client();
    struct sub s = {
        .from = "gina@example.test",
        .to = {{.mailbox = "hank@example.test", .notify = "SUCCESS"},
               {.addr = "far@success.test", .notify = "SUCCESS,FAILURE"}}};
    char id[QUEUE_ID_MAX];
    struct dsn_parsed *p;

    submit_ok(c, &s, id);
    ck_assert_msg(wait_files("gina", 1, 5000) == 1, "no DSN");
    ck_assert_msg(wait_gone(id, 3000), "%s still queued", id);
    p = read_dsn("gina", 0);
    ck_assert_str_eq(p->subject, "Successful Mail Delivery Report");
    ck_assert_str_eq(p->types[2], "text/rfc822-headers");
    ck_assert_int_eq(p->nr, 2);
    for (int i = 0; i < 2; i++) {
        if (strstr(p->r[i].final, "hank@example.test"))
            ck_assert_str_eq(p->r[i].action, "delivered");
        else
            ck_assert_str_eq(p->r[i].action, "relayed");
        ck_assert_str_eq(p->r[i].status, "2.0.0");
    }
    free(p);
    ck_assert_int_eq(wait_files("hank", 1, 1000), 1);
    bus_client_destroy(&c);
}
END_TEST

struct bad_row {
    const char *label;
    struct sub s;
};

static const struct bad_row bad_rows[] = {
    {"address without a domain",
     {.from = "a@example.test", .to = {{.addr = "nodomain"}}}},
    {"mailbox and addr at once",
     {.from = "a@example.test",
      .to = {{.mailbox = "alice@example.test", .addr = "x@y.test"}}}},
    {"NEVER with another",
     {.from = "a@example.test",
      .to = {{.addr = "x@y.test", .notify = "NEVER,SUCCESS"}}}},
    {"unknown NOTIFY",
     {.from = "a@example.test",
      .to = {{.addr = "x@y.test", .notify = "SOMETIMES"}}}},
    {"sender with a line end",
     {.from = "a@example.test\r\nX: y", .to = {{.addr = "x@y.test"}}}},
    {"bad RET",
     {.from = "a@example.test", .ret = "SOME", .to = {{.addr = "x@y.test"}}}},
};

START_TEST(test_bad_request)
{
    const struct bad_row *row = &bad_rows[_i];
    bus_client_t *c = world_client();
    envelope_t *reply = submit(c, &row->s);

    ck_assert_msg(envelope_code(reply) == 501, "%s: got %d %s", row->label,
                  envelope_code(reply), envelope_get_str(reply, ENV_KEY_TEXT));
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "5.5.4");
    envelope_destroy(&reply);
    bus_client_destroy(&c);
}
END_TEST

/* The keys of schemas/redis.md, as a deferred message leaves them. */
START_TEST(test_keys)
{
    bus_client_t *c = world_client();
    struct sub s = {.from = "alice@example.test",
                    .user = "alice@example.test",
                    .to = {{.addr = "held@keys.test",
                            .notify = "FAILURE,DELAY",
                            .orcpt = "rfc822;held@keys.test"}}};
    char id[QUEUE_ID_MAX], k[STORE_KEY_MAX];
    long long t[2];
    int64_t until;
    store_t *st;

    relay_set("held@keys.test", "451");
    submit_ok(c, &s, id);
    until = test_now_ms() + 5000;
    while (relay_log("held@keys.test", t, NULL, 2) < 1 && test_now_ms() < until)
        usleep(50000);
    usleep(300000);
    st = test_redis_connect(W.base, 1000);
    store_key_queue_msg(k, id);
    {
        store_reply_t *r = test_redis_cmd(st, "HMGET", k, "mail_from", "user",
                                          "nrcpts", "ret", "dsn", NULL);

        ck_assert_str_eq(store_reply_str(store_reply_at(r, 0), NULL),
                         "alice@example.test");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 1), NULL),
                         "alice@example.test");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 2), NULL), "1");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 3), NULL), "");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 4), NULL), "");
        store_reply_free(&r);
    }
    ck_assert_int_gt(RINT(st, "HGET", k, "expires_ms"),
                     RINT(st, "HGET", k, "created_ms"));
    store_key_queue_rcpts(k, id);
    {
        store_reply_t *r =
            test_redis_cmd(st, "HMGET", k, "0.addr", "0.status", "0.notify",
                           "0.orcpt", "0.code", "0.ecode", "0.mx", NULL);

        ck_assert_str_eq(store_reply_str(store_reply_at(r, 0), NULL),
                         "held@keys.test");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 1), NULL),
                         "pending");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 2), NULL),
                         "FAILURE,DELAY");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 3), NULL),
                         "rfc822;held@keys.test");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 4), NULL), "451");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 5), NULL), "4.3.0");
        ck_assert_str_eq(store_reply_str(store_reply_at(r, 6), NULL),
                         "mx.stand-in.test:25");
        store_reply_free(&r);
    }
    ck_assert_int_ge(RINT(st, "HGET", k, "0.attempts"), 1);
    ck_assert_int_gt(RINT(st, "HGET", k, "0.next_ms"),
                     RINT(st, "HGET", k, "0.last_ms"));
    store_key_queue_body(k, id);
    ck_assert_int_eq(RINT(st, "STRLEN", k), (long long)strlen(SMALL_MSG));
    ck_assert_int_gt(RINT(st, "ZSCORE", store_key_queue_due(k), id), 0);
    relay_set("held@keys.test", "250");
    store_destroy(&st);
    ck_assert_msg(wait_gone(id, 6000), "%s still queued", id);
    bus_client_destroy(&c);
}
END_TEST

/* Lifetime 3 s and delay warnings after 1 s: a "delayed" DSN, then the
 * bounce with 4.4.7. */
START_TEST(test_expiry)
{
    static const char *const extra[] = {"SAMOTOP_QUEUE_LIFETIME_S=3",
                                        "SAMOTOP_QUEUE_DELAY_WARN_S=1",
                                        "SAMOTOP_QUEUE_RETRY_MAX_S=1", NULL};
    bus_client_t *c;
    struct sub s = {.from = "alice@example.test",
                    .to = {{.addr = "down@expiry.test"}}};
    char id[QUEUE_ID_MAX];
    struct dsn_parsed *p;
    int64_t t0;

    world_start_n(19210, extra, 1);
    c = world_client();
    relay_set("down@expiry.test", "451");
    t0 = test_now_ms();
    submit_ok(c, &s, id);
    ck_assert_msg(wait_files("alice", 2, 10000) == 2, "want two DSNs");
    ck_assert_msg(test_now_ms() - t0 >= 2500, "bounced after %lld ms",
                  (long long)(test_now_ms() - t0));
    ck_assert_msg(wait_gone(id, 3000), "%s still queued", id);
    /* Maildir names begin with the time: the warning came first. */
    p = read_dsn("alice", 0);
    ck_assert_str_eq(p->subject, "Delayed Mail (still being retried)");
    ck_assert_str_eq(p->r[0].action, "delayed");
    ck_assert_str_eq(p->r[0].status, "4.3.0");
    ck_assert_str_ne(p->r[0].retry_until, "");
    free(p);
    p = read_dsn("alice", 1);
    ck_assert_str_eq(p->subject, "Undelivered Mail Returned to Sender");
    ck_assert_str_eq(p->r[0].action, "failed");
    ck_assert_str_eq(p->r[0].status, "4.4.7");
    ck_assert_str_eq(p->r[0].diag,
                     "smtp; 451 4.3.0 Temporary failure, try again later");
    ck_assert_ptr_nonnull(strstr(p->human, "delivery time expired"));
    free(p);
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

/* Two queue processes on one queue: each message delivered once. */
START_TEST(test_two_queues)
{
    enum { N = 40 };
    bus_client_t *c;
    char ids[N][QUEUE_ID_MAX], addr[64];

    world_start_n(19220, NULL, 2);
    c = world_client();
    for (int i = 0; i < N; i++) {
        struct sub s = {.from = "", .to = {{.addr = addr}}};

        snprintf(addr, sizeof(addr), "m%d@two.test", i);
        submit_ok(c, &s, ids[i]);
    }
    for (int i = 0; i < N; i++)
        ck_assert_msg(wait_gone(ids[i], 10000), "%s still queued", ids[i]);
    for (int i = 0; i < N; i++) {
        snprintf(addr, sizeof(addr), "m%d@two.test", i);
        ck_assert_msg(relay_count(addr) == 1, "%s: delivered %lld times", addr,
                      relay_count(addr));
    }
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

/* A queue process killed while it holds a lease: the other one takes the
 * message once the lease has run out. */
START_TEST(test_lease_takeover)
{
    static const char *const extra[] = {"SAMOTOP_QUEUE_LEASE_MS=1500", NULL};
    bus_client_t *c;
    struct sub s = {.from = "", .to = {{.addr = "held@lease.test"}}};
    char id[QUEUE_ID_MAX];
    long long t[4];
    int64_t until, killed_ms;

    world_start_n(19230, extra, 1);
    c = world_client();
    relay_set("held@lease.test", "hang");
    submit_ok(c, &s, id);
    until = test_now_ms() + 5000;
    while (relay_count("held@lease.test") < 1 && test_now_ms() < until)
        usleep(20000);
    ck_assert_int_eq(relay_count("held@lease.test"), 1);
    queue_start(1);
    usleep(1000000); /* renewed meanwhile: the second one must keep off */
    ck_assert_int_eq(relay_count("held@lease.test"), 1);
    relay_set("held@lease.test", "250");
    kill(W.queue[0], SIGKILL);
    waitpid(W.queue[0], NULL, 0);
    W.queue[0] = 0;
    killed_ms = (int64_t)(clock_wall_us() / 1000);
    ck_assert_msg(wait_gone(id, 8000), "%s still queued", id);
    ck_assert_int_eq(relay_log("held@lease.test", t, NULL, 4), 2);
    ck_assert_msg(t[1] - killed_ms >= 800 && t[1] - killed_ms < 4000,
                  "taken over %lld ms after the kill", t[1] - killed_ms);

    /* Stopped while a relay.send is out: it exits cleanly (under ASan:
     * without a leak), leaving the message to its lease. */
    relay_set("stuck@lease.test", "hang");
    s.to[0].addr = "stuck@lease.test";
    submit_ok(c, &s, id);
    until = test_now_ms() + 5000;
    while (relay_count("stuck@lease.test") < 1 && test_now_ms() < until)
        usleep(20000);
    ck_assert_int_eq(relay_count("stuck@lease.test"), 1);
    test_stop_clean(&W.queue[1], "samotop-queue stopped while waiting", 8000);
    ck_assert(!queue_gone(id));
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

START_TEST(test_redis_down)
{
    bus_client_t *c;
    struct sub s = {.from = "", .to = {{.mailbox = "alice@example.test"}}};
    char id[QUEUE_ID_MAX];
    envelope_t *reply;
    int64_t t0, until;
    int code = 0;

    world_start_n(19240, NULL, 1);
    c = world_client();
    submit_ok(c, &s, id);
    kill(W.redis, SIGKILL);
    waitpid(W.redis, NULL, 0);
    W.redis = 0;
    for (int i = 0; i < 2; i++) {
        t0 = test_now_ms();
        reply = submit(c, &s);
        ck_assert_msg(envelope_code(reply) == 451, "got %d %s",
                      envelope_code(reply),
                      envelope_get_str(reply, ENV_KEY_TEXT));
        ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.3.0");
        ck_assert_ptr_null(envelope_get_str(reply, ENV_KEY_QUEUE_ID));
        ck_assert_msg(test_now_ms() - t0 < 2000, "451 after %lld ms",
                      (long long)(test_now_ms() - t0));
        envelope_destroy(&reply);
        usleep(300000);
    }
    W.redis = test_redis_start(W.base);
    redis_fill(W.base);
    until = test_now_ms() + 8000;
    while (code != 250 && test_now_ms() < until) {
        reply = submit(c, &s);
        code = envelope_code(reply);
        if (code == 250)
            snprintf(id, sizeof(id), "%s",
                     envelope_get_str(reply, ENV_KEY_QUEUE_ID));
        envelope_destroy(&reply);
        if (code != 250)
            usleep(200000);
    }
    ck_assert_msg(code == 250, "no 250 after redis came back");
    ck_assert_msg(wait_gone(id, 5000), "%s still queued", id);
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

/* A number from INFO section: the value after "key=" on the line that
 * begins with line (e.g. "cmdstat_evalsha:", "calls"); 0 when there is
 * none. */
static long long
info_number(const char *section, const char *line, const char *key)
{
    store_t *s = test_redis_connect(W.base, 1000);
    store_reply_t *r = test_redis_cmd(s, "INFO", section, NULL);
    const char *text = store_reply_str(r, NULL), *at, *eol;
    char want[64];
    long long n = 0;

    snprintf(want, sizeof(want), "%s=", key);
    for (at = text; at && *at; at = eol ? eol + 1 : NULL) {
        eol = strchr(at, '\n');
        if (strncmp(at, line, strlen(line)) == 0) {
            const char *v = strstr(at, want);

            if (v && (eol == NULL || v < eol))
                n = strtoll(v + strlen(want), NULL, 10);
            break;
        }
    }
    store_reply_free(&r);
    store_destroy(&s);
    return n;
}

static long long
script_calls(const char *cmd)
{
    char line[64];

    snprintf(line, sizeof(line), "cmdstat_%s:", cmd);
    return info_number("commandstats", line, "calls");
}

/* Submits to alice until a 250 (Redis may be on its way back), then waits
 * for the nth file in her Maildir and for the message to leave the
 * queue. */
static void
deliver_nth(bus_client_t *c, int nth, const char *when)
{
    struct sub s = {.from = "", .to = {{.mailbox = "alice@example.test"}}};
    char id[QUEUE_ID_MAX] = "";
    int64_t until = test_now_ms() + 8000;
    int code = 0;

    while (code != 250 && test_now_ms() < until) {
        envelope_t *reply = submit(c, &s);

        code = envelope_code(reply);
        if (code == 250)
            snprintf(id, sizeof(id), "%s",
                     envelope_get_str(reply, ENV_KEY_QUEUE_ID));
        envelope_destroy(&reply);
        if (code != 250)
            usleep(200000);
    }
    ck_assert_msg(code == 250, "%s: no 250 to queue.submit", when);
    ck_assert_msg(wait_files("alice", nth, 5000) == nth, "%s: not delivered",
                  when);
    ck_assert_msg(wait_gone(id, 5000), "%s: %s still queued", when, id);
}

/* The scripts go by their SHA1, and mail goes on when Redis forgets them:
 * after SCRIPT FLUSH under a live connection (an EVALSHA gets NOSCRIPT and
 * goes again as EVAL, and the scripts are loaded again for the next), and
 * after Redis restarted. */
START_TEST(test_scripts_flushed)
{
    bus_client_t *c;
    store_t *s;
    long long evals;

    world_start_n(19245, NULL, 1);
    c = world_client();
    deliver_nth(c, 1, "first message");
    /* Claim, load and update at least, none of them as EVAL. */
    ck_assert_msg(script_calls("evalsha") >= 3, "EVALSHA calls: %lld",
                  script_calls("evalsha"));
    ck_assert_msg(script_calls("eval") == 0, "EVAL calls: %lld",
                  script_calls("eval"));

    s = test_redis_connect(W.base, 1000);
    store_reply_free(
        &(store_reply_t *){test_redis_cmd(s, "SCRIPT", "FLUSH", NULL)});
    store_destroy(&s);
    deliver_nth(c, 2, "after SCRIPT FLUSH");
    ck_assert_msg(info_number("errorstats", "errorstat_NOSCRIPT:", "count") >=
                      1,
                  "no EVALSHA met NOSCRIPT after SCRIPT FLUSH");
    evals = script_calls("eval");
    ck_assert_msg(evals >= 1, "no EVAL after NOSCRIPT");
    /* Loaded again: the next message needs no EVAL. */
    deliver_nth(c, 3, "after the reload");
    ck_assert_msg(script_calls("eval") == evals,
                  "EVAL calls went from %lld to %lld: scripts not reloaded",
                  evals, script_calls("eval"));

    kill(W.redis, SIGKILL);
    waitpid(W.redis, NULL, 0);
    W.redis = test_redis_start(W.base);
    redis_fill(W.base);
    deliver_nth(c, 4, "after a Redis restart");
    ck_assert_msg(script_calls("evalsha") >= 3,
                  "EVALSHA calls after the restart: %lld",
                  script_calls("evalsha"));
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

static Suite *
queue_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *tc;

    tc = tcase_create("dsn");
    tcase_add_loop_test(tc, test_dsn_build, 0, NROWS(dsn_rows));
    suite_add_tcase(s, tc);

    tc = tcase_create("retry");
    tcase_add_loop_test(tc, test_retry_delay, 0, NROWS(retry_rows));
    tcase_add_test(tc, test_retry_grows);
    suite_add_tcase(s, tc);

    tc = tcase_create("delivery");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, world_deliver_start, world_stop);
    tcase_add_test(tc, test_local_delivery);
    tcase_add_test(tc, test_remote_delivery);
    tcase_add_test(tc, test_retry_then_delivered);
    tcase_add_test(tc, test_bounce);
    tcase_add_test(tc, test_bounce_headers_only);
    tcase_add_test(tc, test_bounce_remote_sender);
    tcase_add_test(tc, test_no_bounce);
    tcase_add_test(tc, test_success_dsn);
    tcase_add_loop_test(tc, test_bad_request, 0, NROWS(bad_rows));
    tcase_add_test(tc, test_keys);
    suite_add_tcase(s, tc);

    tc = tcase_create("worlds");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_expiry);
    tcase_add_test(tc, test_two_queues);
    tcase_add_test(tc, test_lease_takeover);
    tcase_add_test(tc, test_redis_down);
    tcase_add_test(tc, test_scripts_flushed);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(queue_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
