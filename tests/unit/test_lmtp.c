/*
 * test_lmtp.c - the ESMTP engine in LMTP mode (lib/smtp_server.h,
 * opts.lmtp; RFC 2033), driven by scripted sessions like test_smtp_server.
 *
 * The policy accepts senders, refuses recipients starting "bad" (550
 * 5.1.1) and answers the message per recipient by its name: "full..." 452
 * 4.2.2, "fail..." 451 4.3.0, others 250 2.0.0 "<name> stored". It answers
 * the recipients in reverse order, so the tests see that the engine puts
 * the replies back in RCPT order (RFC 2033 4.2). A message holding
 * "ALL-554" is answered with one smtp_server_reply() for every recipient.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "lib/buf.h"
#include "lib/smtp_server.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

struct run {
    buf_t out;   /* every byte the engine queued */
    buf_t rcpts; /* the MESSAGE events' recipients, space-separated */
    smtp_server_t *srv;
};

static bool
starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void
answer_message(struct run *r, const struct smtp_event *ev)
{
    char text[128];

    for (int i = 0; i < ev->message.nrcpts; i++)
        buf_printf(&r->rcpts, "%s%s", r->rcpts.len ? " " : "",
                   ev->message.rcpts[i]);
    if (ev->message.rcpts == NULL) {
        smtp_server_reply(r->srv, 250, "2.0.0", "queued"); /* SMTP mode */
        return;
    }
    if (memmem(ev->message.data, ev->message.len, "ALL-554", 7)) {
        smtp_server_reply(r->srv, 554, "5.7.1", "spam");
        return;
    }
    for (int i = ev->message.nrcpts - 1; i >= 0; i--) {
        const char *to = ev->message.rcpts[i];

        if (starts(to, "full")) {
            smtp_server_reply_rcpt(r->srv, i, 452, "4.2.2", "over quota");
        } else if (starts(to, "fail")) {
            smtp_server_reply_rcpt(r->srv, i, 451, "4.3.0", "disk");
        } else {
            snprintf(text, sizeof(text), "%s stored", to);
            smtp_server_reply_rcpt(r->srv, i, 250, "2.0.0", text);
        }
    }
}

static void
take_output(struct run *r)
{
    size_t n;
    const char *out = smtp_server_output(r->srv, &n);

    buf_add(&r->out, out, n);
    smtp_server_output_done(r->srv, n);
}

static void
drain(struct run *r)
{
    const struct smtp_event *ev;

    while ((ev = smtp_server_next(r->srv))->type != SMTP_EV_NONE) {
        switch (ev->type) {
        case SMTP_EV_CONNECT:
            smtp_server_reply(r->srv, 220, NULL, "LMTP test");
            break;
        case SMTP_EV_MAIL:
            smtp_server_reply(r->srv, 250, "2.1.0", "OK");
            break;
        case SMTP_EV_RCPT:
            if (starts(ev->rcpt.to, "bad"))
                smtp_server_reply(r->srv, 550, "5.1.1", "no such user");
            else
                smtp_server_reply(r->srv, 250, "2.1.5", "OK");
            break;
        case SMTP_EV_MESSAGE:
            answer_message(r, ev);
            break;
        default:
            break;
        }
        take_output(r);
    }
    take_output(r);
}

/* Feeds data in slices of chunk bytes (0: whole). */
static void
feed(struct run *r, const char *data, size_t chunk)
{
    size_t len = strlen(data), pos = 0;

    while (pos < len) {
        size_t n = chunk && chunk < len - pos ? chunk : len - pos;
        size_t took = smtp_server_input(r->srv, data + pos, n);

        ck_assert_uint_gt(took, 0);
        pos += took;
        drain(r);
    }
}

static void
run_start(struct run *r, bool lmtp)
{
    struct smtp_server_opts o = {
        .hostname = "mbox.test",
        .max_message = 4096,
        /* PIPELINING and ENHANCEDSTATUSCODES left out on purpose: LMTP
         * mode must offer them anyway (RFC 2033 4.1). */
        .ext = SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_CHUNKING,
        .lmtp = lmtp,
    };

    if (!lmtp)
        o.ext |= SMTP_EXT_ENHANCEDSTATUSCODES;

    memset(r, 0, sizeof(*r));
    r->srv = smtp_server_new(&o);
    drain(r);
}

static void
run_free(struct run *r)
{
    smtp_server_destroy(&r->srv);
    buf_free(&r->out);
    buf_free(&r->rcpts);
}

/* The reply codes of the output, "code ecode" joined by ",", as
 * test_smtp_server writes them (a multi-line reply counts once). */
static void
summary(const buf_t *out, buf_t *sum)
{
    const char *p = out->data, *end = out->data + out->len;

    while (p && p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);

        if (n >= 4 && p[3] == ' ') {
            const char *sp = memchr(p + 4, ' ', n - 4);
            size_t keep = 3;

            if (sp && p[4] >= '2' && p[4] <= '5' && p[5] == '.')
                keep = (size_t)(sp - p);
            buf_printf(sum, "%s%.*s", sum->len ? "," : "", (int)keep, p);
        }
        p = eol ? eol + 2 : end;
    }
}

#define LHLO "LHLO client.test\r\n"
#define TXN2                                                                   \
    "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@m.test>\r\nRCPT TO:<bad@m.test>\r\n"   \
    "RCPT TO:<full@m.test>\r\nRCPT TO:<b@m.test>\r\n"

static const struct row {
    const char *label;
    const char *in;
    const char *want;  /* the reply summary */
    const char *rcpts; /* what MESSAGE events listed */
} rows[] = {
    {"greeting and LHLO", LHLO, "220,250", ""},
    /* RFC 2033 4.1: HELO and EHLO are not LMTP. */
    {"HELO refused", "HELO client.test\r\n", "220,500 5.5.1", ""},
    {"EHLO refused", "EHLO client.test\r\n", "220,500 5.5.1", ""},
    {"MAIL before LHLO", "MAIL FROM:<s@x.test>\r\n", "220,503 5.5.1", ""},
    /* RFC 2033 4.2: one reply per accepted RCPT, in RCPT order. */
    {"DATA, a reply per recipient", LHLO TXN2 "DATA\r\nhi\r\n.\r\n",
     "220,250,250 2.1.0,250 2.1.5,550 5.1.1,250 2.1.5,250 2.1.5,354,"
     "250 2.0.0,452 4.2.2,250 2.0.0",
     "a@m.test full@m.test b@m.test"},
    {"BDAT LAST, a reply per recipient",
     LHLO TXN2 "BDAT 4\r\nhi\r\nBDAT 0 LAST\r\n",
     "220,250,250 2.1.0,250 2.1.5,550 5.1.1,250 2.1.5,250 2.1.5,"
     "250 2.0.0,250 2.0.0,452 4.2.2,250 2.0.0",
     "a@m.test full@m.test b@m.test"},
    {"one answer for all", LHLO TXN2 "DATA\r\nALL-554\r\n.\r\n",
     "220,250,250 2.1.0,250 2.1.5,550 5.1.1,250 2.1.5,250 2.1.5,354,"
     "554 5.7.1,554 5.7.1,554 5.7.1",
     "a@m.test full@m.test b@m.test"},
    /* RFC 2033 4.2: DATA with no good recipient is 503. */
    {"DATA without recipients",
     LHLO "MAIL FROM:<s@x.test>\r\nRCPT TO:<bad@m.test>\r\nDATA\r\n",
     "220,250,250 2.1.0,550 5.1.1,503 5.5.1", ""},
    {"two transactions",
     LHLO "MAIL FROM:<s@x.test>\r\nRCPT TO:<fail@m.test>\r\nDATA\r\n"
          "x\r\n.\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<c@m.test>\r\n"
          "DATA\r\ny\r\n.\r\nQUIT\r\n",
     "220,250,250 2.1.0,250 2.1.5,354,451 4.3.0,250 2.1.0,250 2.1.5,354,"
     "250 2.0.0,221 2.0.0",
     "fail@m.test c@m.test"},
    {"RSET forgets recipients",
     LHLO "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@m.test>\r\nRSET\r\n"
          "MAIL FROM:<s@x.test>\r\nRCPT TO:<b@m.test>\r\nDATA\r\nz\r\n.\r\n",
     "220,250,250 2.1.0,250 2.1.5,250 2.0.0,250 2.1.0,250 2.1.5,354,"
     "250 2.0.0",
     "b@m.test"},
    /* The engine's own refusal of the data is per recipient too. */
    {"line too long, per recipient",
     LHLO "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@m.test>\r\nRCPT TO:<b@m.test>"
          "\r\nDATA\r\n"
          "%LONG%"
          "\r\n.\r\n",
     "220,250,250 2.1.0,250 2.1.5,250 2.1.5,354,554 5.6.0,554 5.6.0", ""},
    {"VRFY NOOP", LHLO "VRFY a@m.test\r\nNOOP\r\n",
     "220,250,252 2.5.0,250 2.0.0", ""},
};

/* The input of a row, with %LONG% made a 1200-octet line. */
static char *
row_input(const struct row *row)
{
    const char *mark = strstr(row->in, "%LONG%");
    buf_t b = BUF_INIT;

    if (mark == NULL)
        return strdup(row->in);
    buf_add(&b, row->in, (size_t)(mark - row->in));
    for (int i = 0; i < 1200; i++)
        buf_addc(&b, 'x');
    buf_adds(&b, mark + 6);
    return buf_take(&b);
}

static void
check_row(const struct row *row, size_t chunk)
{
    struct run r;
    buf_t sum = BUF_INIT;
    char *in = row_input(row);

    run_start(&r, true);
    feed(&r, in, chunk);
    summary(&r.out, &sum);
    ck_assert_msg(strcmp(sum.len ? sum.data : "", row->want) == 0,
                  "%s (chunk %zu): got %s, want %s", row->label, chunk,
                  sum.len ? sum.data : "", row->want);
    ck_assert_msg(strcmp(r.rcpts.len ? r.rcpts.data : "", row->rcpts) == 0,
                  "%s: rcpts got %s, want %s", row->label,
                  r.rcpts.len ? r.rcpts.data : "", row->rcpts);
    buf_free(&sum);
    free(in);
    run_free(&r);
}

START_TEST(test_script)
{
    check_row(&rows[_i], 0);
}
END_TEST

/* Byte by byte: the same replies, whatever the slicing. */
START_TEST(test_script_bytes)
{
    check_row(&rows[_i], 1);
}
END_TEST

/* RFC 2033 4.1: PIPELINING and ENHANCEDSTATUSCODES always offered. */
START_TEST(test_lhlo_reply)
{
    struct run r;

    run_start(&r, true);
    feed(&r, LHLO, 0);
    ck_assert_ptr_nonnull(strstr(r.out.data, "250-PIPELINING\r\n"));
    ck_assert_ptr_nonnull(strstr(r.out.data, "ENHANCEDSTATUSCODES\r\n"));
    ck_assert_ptr_nonnull(strstr(r.out.data, "CHUNKING"));
    ck_assert_str_eq(smtp_server_helo(r.srv), "client.test");
    ck_assert_str_eq(smtp_server_with(r.srv), "LMTP");
    run_free(&r);
}
END_TEST

/* The per-recipient texts go out as given, in RCPT order. */
START_TEST(test_reply_texts)
{
    struct run r;
    const char *want = "354 End data with <CR><LF>.<CR><LF>\r\n"
                       "250 2.0.0 a@m.test stored\r\n"
                       "452 4.2.2 over quota\r\n"
                       "250 2.0.0 b@m.test stored\r\n";

    run_start(&r, true);
    feed(&r, LHLO TXN2, 0);
    buf_reset(&r.out);
    feed(&r, "DATA\r\nhello\r\n.\r\n", 0);
    ck_assert_str_eq(r.out.data, want);
    run_free(&r);
}
END_TEST

/* Answers may come one at a time, later: nothing goes out until all are
 * in, and the engine takes no command meanwhile. */
START_TEST(test_answers_later)
{
    struct smtp_server_opts o = {.hostname = "mbox.test", .lmtp = true};
    smtp_server_t *srv = smtp_server_new(&o);
    const char *in = "LHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@m.test>\r\n"
                     "RCPT TO:<b@m.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n";
    const struct smtp_event *ev;
    size_t len;

    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CONNECT);
    smtp_server_reply(srv, 220, NULL, "LMTP");
    ck_assert_uint_eq(smtp_server_input(srv, in, strlen(in)), strlen(in));
    while ((ev = smtp_server_next(srv))->type != SMTP_EV_MESSAGE) {
        ck_assert_int_ne(ev->type, SMTP_EV_NONE);
        if (ev->type == SMTP_EV_MAIL || ev->type == SMTP_EV_RCPT)
            smtp_server_reply(srv, 250, NULL, NULL);
    }
    ck_assert_int_eq(ev->message.nrcpts, 2);
    ck_assert_str_eq(ev->message.rcpts[0], "a@m.test");
    ck_assert_str_eq(ev->message.rcpts[1], "b@m.test");
    smtp_server_output(srv, &len);
    smtp_server_output_done(srv, len);
    smtp_server_reply_rcpt(srv, 1, 250, "2.0.0", "b ok");
    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_NONE);
    smtp_server_output(srv, &len);
    ck_assert_uint_eq(len, 0);
    smtp_server_reply_rcpt(srv, 0, 451, NULL, NULL);
    /* The transaction is over; NOOP runs. */
    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_RESET);
    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_NONE);
    ck_assert_str_eq(smtp_server_output(srv, &len),
                     "451 4.0.0 Temporary failure, try again later\r\n"
                     "250 2.0.0 b ok\r\n250 2.0.0 OK\r\n");
    smtp_server_destroy(&srv);
}
END_TEST

/* A 421 among the answers: all replies go out, then the session closes. */
START_TEST(test_421_closes)
{
    struct smtp_server_opts o = {.hostname = "mbox.test", .lmtp = true};
    smtp_server_t *srv = smtp_server_new(&o);
    const char *in = "LHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@m.test>\r\n"
                     "RCPT TO:<b@m.test>\r\nDATA\r\nx\r\n.\r\n";
    const struct smtp_event *ev;

    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CONNECT);
    smtp_server_reply(srv, 220, NULL, "LMTP");
    smtp_server_input(srv, in, strlen(in));
    while ((ev = smtp_server_next(srv))->type != SMTP_EV_MESSAGE)
        if (ev->type == SMTP_EV_MAIL || ev->type == SMTP_EV_RCPT)
            smtp_server_reply(srv, 250, NULL, NULL);
    smtp_server_reply_rcpt(srv, 0, 250, NULL, NULL);
    smtp_server_reply_rcpt(srv, 1, 421, "4.3.2", "going down");
    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_RESET);
    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CLOSE);
    ck_assert(smtp_server_done(srv));
    smtp_server_destroy(&srv);
}
END_TEST

/* A session closed while the answers are awaited frees what it held. */
START_TEST(test_close_while_pending)
{
    struct smtp_server_opts o = {.hostname = "mbox.test", .lmtp = true};
    smtp_server_t *srv = smtp_server_new(&o);
    const char *in = "LHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@m.test>\r\n"
                     "DATA\r\nx\r\n.\r\n";
    const struct smtp_event *ev;
    size_t len;

    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CONNECT);
    smtp_server_reply(srv, 220, NULL, "LMTP");
    smtp_server_input(srv, in, strlen(in));
    while ((ev = smtp_server_next(srv))->type != SMTP_EV_MESSAGE)
        if (ev->type == SMTP_EV_MAIL || ev->type == SMTP_EV_RCPT)
            smtp_server_reply(srv, 250, NULL, NULL);
    smtp_server_close(srv, "4.4.2", "idle");
    ck_assert_ptr_nonnull(strstr(smtp_server_output(srv, &len), "421 4.4.2"));
    smtp_server_destroy(&srv);
}
END_TEST

/* SMTP mode is untouched: LHLO is unknown, no recipients are listed. */
START_TEST(test_smtp_mode)
{
    struct run r;
    buf_t sum = BUF_INIT;

    run_start(&r, false);
    feed(&r,
         "LHLO c.test\r\nEHLO c.test\r\nMAIL FROM:<>\r\n"
         "RCPT TO:<a@m.test>\r\nDATA\r\nx\r\n.\r\n",
         0);
    summary(&r.out, &sum);
    ck_assert_str_eq(sum.data, "220,500 5.5.2,250,250 2.1.0,250 2.1.5,354,"
                               "250 2.0.0");
    ck_assert_uint_eq(r.rcpts.len, 0);
    ck_assert_str_eq(smtp_server_with(r.srv), "ESMTP");
    buf_free(&sum);
    run_free(&r);
}
END_TEST

/* Caller bugs abort. */
static smtp_server_t *
pending_message(bool lmtp)
{
    struct smtp_server_opts o = {.hostname = "mbox.test", .lmtp = lmtp};
    smtp_server_t *srv = smtp_server_new(&o);
    const char *in = "LHLO c.test\r\nEHLO c.test\r\nMAIL FROM:<>\r\n"
                     "RCPT TO:<a@m.test>\r\nDATA\r\nx\r\n.\r\n";
    const struct smtp_event *ev;

    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CONNECT);
    smtp_server_reply(srv, 220, NULL, "hi");
    smtp_server_input(srv, in, strlen(in));
    while ((ev = smtp_server_next(srv))->type != SMTP_EV_MESSAGE) {
        ck_assert_int_ne(ev->type, SMTP_EV_NONE);
        if (ev->type == SMTP_EV_MAIL || ev->type == SMTP_EV_RCPT)
            smtp_server_reply(srv, 250, NULL, NULL);
    }
    /* Only what follows may abort. */
    ck_assert_int_eq(ev->message.nrcpts, lmtp ? 1 : 0);
    return srv;
}

START_TEST(test_rcpt_reply_twice)
{
    smtp_server_t *srv = pending_message(true);

    /* One recipient: the first answer ends the message. */
    smtp_server_reply_rcpt(srv, 0, 250, NULL, NULL);
    smtp_server_reply_rcpt(srv, 0, 250, NULL, NULL);
}
END_TEST

START_TEST(test_rcpt_reply_range)
{
    smtp_server_t *srv = pending_message(true);

    smtp_server_reply_rcpt(srv, 1, 250, NULL, NULL);
}
END_TEST

START_TEST(test_rcpt_reply_smtp)
{
    smtp_server_t *srv = pending_message(false);

    smtp_server_reply_rcpt(srv, 0, 250, NULL, NULL);
}
END_TEST

static Suite *
lmtp_suite(void)
{
    Suite *s = suite_create("lmtp");
    TCase *tc = tcase_create("lmtp");

    tcase_add_loop_test(tc, test_script, 0, NROWS(rows));
    tcase_add_loop_test(tc, test_script_bytes, 0, NROWS(rows));
    tcase_add_test(tc, test_lhlo_reply);
    tcase_add_test(tc, test_reply_texts);
    tcase_add_test(tc, test_answers_later);
    tcase_add_test(tc, test_421_closes);
    tcase_add_test(tc, test_close_while_pending);
    tcase_add_test(tc, test_smtp_mode);
    tcase_add_test_raise_signal(tc, test_rcpt_reply_twice, SIGABRT);
    tcase_add_test_raise_signal(tc, test_rcpt_reply_range, SIGABRT);
    tcase_add_test_raise_signal(tc, test_rcpt_reply_smtp, SIGABRT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(lmtp_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
