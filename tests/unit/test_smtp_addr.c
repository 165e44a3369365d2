/*
 * test_smtp_addr.c - RFC 5321 paths (lib/smtp_addr.h): valid and invalid
 * paths, quoted local parts, source routes, address literals, UTF-8 with
 * and without SMTPUTF8, the 4.5.3.1 length limits, normalisation, quoting,
 * xtext and UTF-8 checks. Table-driven: each row is a label, an input, the
 * flags, and what must come out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "lib/err.h"
#include "lib/smtp_addr.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

#define NUL SMTP_ADDR_NULL_OK
#define PM SMTP_ADDR_POSTMASTER
#define U8 SMTP_ADDR_UTF8

/* Paths that parse: what the normalised mailbox, local part and domain
 * are, and how much of the input was taken. */
static const struct ok_row {
    const char *label, *in;
    unsigned flags;
    const char *mailbox, *local, *domain;
    size_t used;
} ok_rows[] = {
    {"plain", "<alice@example.test>", 0, "alice@example.test", "alice",
     "example.test", 20},
    {"domain lower-cased", "<Alice@EXAMPLE.Test>", 0, "Alice@example.test",
     "Alice", "example.test", 20},
    {"dots in local part", "<a.b.c@x.example>", 0, "a.b.c@x.example", "a.b.c",
     "x.example", 17},
    {"percent and bang are plain", "<a%b!c@relay.example>", 0,
     "a%b!c@relay.example", "a%b!c", "relay.example", 21},
    {"all atext specials", "<!#$%&'*+-/=?^_`{|}~@x.example>", 0,
     "!#$%&'*+-/=?^_`{|}~@x.example", "!#$%&'*+-/=?^_`{|}~", "x.example", 31},
    {"plus address", "<bob+news@example.org>", 0, "bob+news@example.org",
     "bob+news", "example.org", 22},
    {"trailing text not taken", "<a@b.example> SIZE=10", 0, "a@b.example",
     "a", "b.example", 13},
    {"quoted, needs no quotes", "<\"abc\"@x.example>", 0, "abc@x.example",
     "abc", "x.example", 17},
    {"quoted with space", "<\"john doe\"@x.example>", 0,
     "\"john doe\"@x.example", "john doe", "x.example", 22},
    {"quoted with at and angle", "<\"a@b>c\"@x.example>", 0,
     "\"a@b>c\"@x.example", "a@b>c", "x.example", 19},
    {"quoted pair kept minimal", "<\"a\\b\\\"c\\\\\"@x.example>", 0,
     "\"ab\\\"c\\\\\"@x.example", "ab\"c\\", "x.example", 22},
    {"quoted leading dot", "<\".x\"@x.example>", 0, "\".x\"@x.example", ".x",
     "x.example", 16},
    {"quoted empty", "<\"\"@x.example>", 0, "\"\"@x.example", "", "x.example",
     14},
    {"null path", "<>", NUL, "", "", "", 2},
    {"null path, params after", "<> BODY=8BITMIME", NUL, "", "", "", 2},
    {"postmaster", "<Postmaster>", PM, "postmaster", "postmaster", "", 12},
    {"postmaster any case", "<POSTMASTER>", PM, "postmaster", "postmaster",
     "", 12},
    {"postmaster with domain", "<postmaster@X.example>", PM,
     "postmaster@x.example", "postmaster", "x.example", 22},
    {"source route dropped", "<@a.example,@b.example:u@c.example>", 0,
     "u@c.example", "u", "c.example", 35},
    {"one-hop source route", "<@A.example:u@c.example>", 0, "u@c.example",
     "u", "c.example", 24},
    {"IPv4 literal", "<u@[192.0.2.1]>", 0, "u@[192.0.2.1]", "u",
     "[192.0.2.1]", 15},
    {"IPv6 literal", "<u@[IPv6:2001:DB8::1]>", 0, "u@[IPv6:2001:db8::1]",
     "u", "[IPv6:2001:db8::1]", 22},
    {"IPv6 tag any case", "<u@[ipv6:::1]>", 0, "u@[IPv6:::1]", "u",
     "[IPv6:::1]", 14},
    {"IPv6 with IPv4 tail", "<u@[IPv6:::ffff:192.0.2.1]>", 0,
     "u@[IPv6:::ffff:192.0.2.1]", "u", "[IPv6:::ffff:192.0.2.1]", 27},
    {"hyphen inside label", "<u@a-b.example>", 0, "u@a-b.example", "u",
     "a-b.example", 15},
    {"digit labels", "<u@123.example>", 0, "u@123.example", "u",
     "123.example", 15},
    {"single-label domain", "<u@localhost>", 0, "u@localhost", "u",
     "localhost", 13},
    {"UTF-8 local part", "<jürgen@example.de>", U8, "jürgen@example.de",
     "jürgen", "example.de", 20},
    {"UTF-8 domain", "<u@bücher.example>", U8, "u@bücher.example", "u",
     "bücher.example", 19},
    {"UTF-8 in quotes", "<\"ä b\"@x.example>", U8, "\"ä b\"@x.example",
     "ä b", "x.example", 18},
    {"UTF-8 domain not lower-cased", "<u@ÄÖ.Example>", U8, "u@ÄÖ.example",
     "u", "ÄÖ.example", 16},
};

START_TEST(test_ok)
{
    const struct ok_row *r = &ok_rows[_i];
    struct smtp_path p;
    const char *why = NULL;
    size_t used = 0;
    int rc = smtp_path_parse(r->in, strlen(r->in), r->flags, &p, &used, &why);

    ck_assert_msg(rc == 0, "%s: got %s (%s), want OK", r->label, err_name(rc),
                  why);
    ck_assert_msg(strcmp(p.mailbox, r->mailbox) == 0,
                  "%s: mailbox: got \"%s\", want \"%s\"", r->label, p.mailbox,
                  r->mailbox);
    ck_assert_msg(strcmp(p.local, r->local) == 0,
                  "%s: local: got \"%s\", want \"%s\"", r->label, p.local,
                  r->local);
    ck_assert_msg(strcmp(p.domain, r->domain) == 0,
                  "%s: domain: got \"%s\", want \"%s\"", r->label, p.domain,
                  r->domain);
    ck_assert_msg(used == r->used, "%s: used: got %zu, want %zu", r->label,
                  used, r->used);
}
END_TEST

/* The flags a parse sets. */
START_TEST(test_flags)
{
    struct smtp_path p;

    ck_assert_int_eq(smtp_path_parse("<>", 2, NUL, &p, NULL, NULL), 0);
    ck_assert(p.null && !p.postmaster && !p.route);
    ck_assert_int_eq(smtp_path_parse("<postmaster>", 12, PM, &p, NULL, NULL),
                     0);
    ck_assert(p.postmaster && !p.null);
    ck_assert_int_eq(
        smtp_path_parse("<\"x\"@[192.0.2.1]>", 17, 0, &p, NULL, NULL), 0);
    ck_assert(p.quoted && p.literal && !p.utf8);
    ck_assert_int_eq(smtp_path_parse("<@a.b:x@ü.de>", 14, U8, &p, NULL, NULL),
                     0);
    ck_assert(p.route && p.utf8 && !p.quoted && !p.literal);
}
END_TEST

static char long_local[80], long_domain[400], long_path[300], long_label[90],
    max_local[80], max_path[300];

static void
make_long(void)
{
    /* 65-octet local part; 64 is the limit (4.5.3.1.1). */
    snprintf(long_local, sizeof(long_local), "<%.65s@x.example>",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaa");
    snprintf(max_local, sizeof(max_local), "<%.64s@x.example>",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaa");
    /* A 64-octet label; 63 is the limit (RFC 1035). */
    snprintf(long_label, sizeof(long_label), "<u@%.64s.example>",
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
             "bbbbbbbbbb");
    /* A domain of 5 x 60 + 4 = 304 octets: over 255 (4.5.3.1.2). */
    strcpy(long_domain, "<u@");
    for (int i = 0; i < 5; i++)
        strcat(long_domain, "cccccccccccccccccccccccccccccccccccccccccccccccccc"
                            "cccccccccc.");
    strcat(long_domain, "test>");
    /* 64 + 1 + 190 + 2 = 257 octets: over the 256 of 4.5.3.1.3, while the
     * parts are within theirs. */
    /* memcpy, not strncat: GCC's -O2 truncation warning would refuse the
     * deliberate cut of max_local to its 64-octet local part. */
    long_path[0] = '<';
    memcpy(long_path + 1, max_local + 1, 64);
    long_path[65] = '\0';
    strcat(long_path, "@");
    for (int i = 0; i < 3; i++)
        strcat(long_path, "dddddddddddddddddddddddddddddddddddddddddddddddddd"
                          "ddddddddd.");
    strcat(long_path, "eeeeeeeeee>");
    /* Exactly 256: accepted. */
    max_path[0] = '<';
    memcpy(max_path + 1, max_local + 1, 64);
    max_path[65] = '\0';
    strcat(max_path, "@");
    for (int i = 0; i < 3; i++)
        strcat(max_path, "dddddddddddddddddddddddddddddddddddddddddddddddddd"
                         "ddddddddd.");
    strcat(max_path, "eeeeeeeee>");
}

/* Paths refused, and with what. */
static const struct bad_row {
    const char *label, *in;
    unsigned flags;
    int want;
} bad_rows[] = {
    {"no brackets", "a@b.example", 0, ERR_INVAL},
    {"empty", "", 0, ERR_INVAL},
    {"unterminated", "<a@b.example", 0, ERR_INVAL},
    {"null path not allowed", "<>", 0, ERR_INVAL},
    {"no at", "<ab.example>", 0, ERR_INVAL},
    {"postmaster not allowed", "<postmaster>", 0, ERR_INVAL},
    {"quoted postmaster is no postmaster", "<\"postmaster\">", PM, ERR_INVAL},
    {"postmaster after a route", "<@a.example:postmaster>", PM, ERR_INVAL},
    {"empty local part", "<@b.example>", 0, ERR_INVAL},
    {"two at signs", "<a@@b.example>", 0, ERR_INVAL},
    {"at in local part", "<a@b@c.example>", 0, ERR_INVAL},
    {"leading dot", "<.a@b.example>", 0, ERR_INVAL},
    {"trailing dot", "<a.@b.example>", 0, ERR_INVAL},
    {"double dot", "<a..b@b.example>", 0, ERR_INVAL},
    {"space in local part", "<a b@b.example>", 0, ERR_INVAL},
    {"comma in local part", "<a,b@b.example>", 0, ERR_INVAL},
    {"control in quotes", "<\"a\tb\"@b.example>", 0, ERR_INVAL},
    {"unterminated quotes", "<\"ab@b.example>", 0, ERR_INVAL},
    {"quoted pair of a control", "<\"a\\\x01\"@b.example>", 0, ERR_INVAL},
    {"no domain", "<a@>", 0, ERR_INVAL},
    {"domain trailing dot", "<a@b.example.>", 0, ERR_INVAL},
    {"domain leading dot", "<a@.example>", 0, ERR_INVAL},
    {"domain double dot", "<a@b..example>", 0, ERR_INVAL},
    {"label leading hyphen", "<a@-b.example>", 0, ERR_INVAL},
    {"label trailing hyphen", "<a@b-.example>", 0, ERR_INVAL},
    {"underscore in domain", "<a@b_c.example>", 0, ERR_INVAL},
    {"junk after domain", "<a@b.example x>", 0, ERR_INVAL},
    {"bad IPv4 literal", "<a@[192.0.2.256]>", 0, ERR_INVAL},
    {"short IPv4 literal", "<a@[192.0.2]>", 0, ERR_INVAL},
    {"IPv4 literal 4 digits", "<a@[1922.0.2.1]>", 0, ERR_INVAL},
    {"bad IPv6 literal", "<a@[IPv6:2001:db8:::1:2]>", 0, ERR_INVAL},
    {"IPv6 without tag", "<a@[2001:db8::1]>", 0, ERR_INVAL},
    {"unknown literal tag", "<a@[X-foo:bar]>", 0, ERR_INVAL},
    {"unterminated literal", "<a@[192.0.2.1>", 0, ERR_INVAL},
    {"bad route", "<@a.example;u@c.example>", 0, ERR_INVAL},
    {"route without colon", "<@a.example,u@c.example>", 0, ERR_INVAL},
    {"route bad domain", "<@a..example:u@c.example>", 0, ERR_INVAL},
    {"UTF-8 local without SMTPUTF8", "<jürgen@example.de>", 0, ERR_INVAL},
    {"UTF-8 domain without SMTPUTF8", "<u@bücher.example>", 0, ERR_INVAL},
    {"malformed UTF-8", "<\xc3(@x.example>", U8, ERR_INVAL},
    {"overlong UTF-8", "<\xc0\xaf@x.example>", U8, ERR_INVAL},
    {"surrogate in UTF-8", "<\xed\xa0\x80@x.example>", U8, ERR_INVAL},
    {"latin-1 byte", "<j\xfcrgen@x.example>", U8, ERR_INVAL},
    {"NUL in local part", "<a\0b@x.example>", 0, ERR_INVAL},
    {"local part too long", long_local, 0, ERR_TOO_BIG},
    {"label too long", long_label, 0, ERR_INVAL},
    {"domain too long", long_domain, 0, ERR_TOO_BIG},
    {"path too long", long_path, 0, ERR_TOO_BIG},
};

START_TEST(test_bad)
{
    const struct bad_row *r = &bad_rows[_i];
    struct smtp_path p;
    const char *why = NULL;
    size_t used = 99;
    int rc;

    make_long();
    /* The NUL row is the one input that needs its length spelt out. */
    rc = smtp_path_parse(r->in,
                         strcmp(r->label, "NUL in local part") == 0
                             ? 15
                             : strlen(r->in),
                         r->flags, &p, &used, &why);
    ck_assert_msg(rc == r->want, "%s: got %s, want %s", r->label,
                  err_name(rc), err_name(r->want));
    ck_assert_msg(why != NULL && why[0] != '\0', "%s: no reason", r->label);
    ck_assert_msg(used == 0, "%s: used %zu on failure", r->label, used);
}
END_TEST

START_TEST(test_limits_exact)
{
    struct smtp_path p;
    const char *why;

    make_long();
    ck_assert_uint_eq(strlen(max_local), 64 + 12);
    ck_assert_msg(smtp_path_parse(max_local, strlen(max_local), 0, &p, NULL,
                                  &why) == 0,
                  "64-octet local part: %s", why);
    ck_assert_uint_eq(strlen(max_path), 256);
    ck_assert_msg(smtp_path_parse(max_path, strlen(max_path), 0, &p, NULL,
                                  &why) == 0,
                  "256-octet path: %s", why);
    ck_assert_uint_eq(strlen(long_path), 257);
    ck_assert_uint_eq(strlen(p.mailbox), 254);
}
END_TEST

/* UTF-8 refused for want of SMTPUTF8 is told apart from bad syntax. */
START_TEST(test_utf8_refusal)
{
    struct smtp_path p;
    const char *why;
    const char *in = "<jürgen@example.de>";

    ck_assert_int_eq(smtp_path_parse(in, strlen(in), 0, &p, NULL, &why),
                     ERR_INVAL);
    ck_assert_msg(p.utf8, "utf8 not set on the refusal (%s)", why);
    ck_assert_int_eq(smtp_path_parse("<a b@x>", 7, 0, &p, NULL, &why),
                     ERR_INVAL);
    ck_assert(!p.utf8);
}
END_TEST

/* Input is not read past len, and needs no NUL. */
START_TEST(test_len_bounds)
{
    const char in[] = {'<', 'a', '@', 'b', '>'};
    struct smtp_path p;
    size_t used;

    ck_assert_int_eq(smtp_path_parse(in, 5, 0, &p, &used, NULL), 0);
    ck_assert_uint_eq(used, 5);
    ck_assert_int_eq(smtp_path_parse(in, 4, 0, &p, &used, NULL), ERR_INVAL);
    ck_assert_int_eq(smtp_path_parse(in, 3, 0, &p, &used, NULL), ERR_INVAL);
    ck_assert_int_eq(smtp_path_parse(in, 1, NUL, &p, &used, NULL), ERR_INVAL);
}
END_TEST

static const struct mbox_row {
    const char *label, *in;
    unsigned flags;
    int want;
    const char *mailbox;
} mbox_rows[] = {
    {"plain", "Bob@Example.ORG", 0, 0, "Bob@example.org"},
    {"quoted", "\"a b\"@x.example", 0, 0, "\"a b\"@x.example"},
    {"empty refused", "", 0, ERR_INVAL, ""},
    {"empty as null", "", NUL, 0, ""},
    {"brackets refused", "<a@b>", 0, ERR_INVAL, ""},
    {"route refused", "@a.example:b@c.example", 0, ERR_INVAL, ""},
    {"trailing junk", "a@b.example>", 0, ERR_INVAL, ""},
    {"no domain", "postmaster", 0, ERR_INVAL, ""},
    {"utf8", "ü@x.example", U8, 0, "ü@x.example"},
    {"utf8 refused", "ü@x.example", 0, ERR_INVAL, ""},
};

START_TEST(test_mailbox)
{
    const struct mbox_row *r = &mbox_rows[_i];
    struct smtp_path p;
    const char *why = NULL;
    int rc = smtp_mailbox_parse(r->in, strlen(r->in), r->flags, &p, &why);

    ck_assert_msg(rc == r->want, "%s: got %s (%s), want %s", r->label,
                  err_name(rc), why, err_name(r->want));
    if (rc == 0)
        ck_assert_msg(strcmp(p.mailbox, r->mailbox) == 0,
                      "%s: got \"%s\", want \"%s\"", r->label, p.mailbox,
                      r->mailbox);
}
END_TEST

static const struct quote_row {
    const char *local;
    bool utf8, needs;
    const char *quoted;
} quote_rows[] = {
    {"alice", false, false, "alice"},
    {"a.b", false, false, "a.b"},
    {"a%b!c", false, false, "a%b!c"},
    {"", false, true, "\"\""},
    {".a", false, true, "\".a\""},
    {"a.", false, true, "\"a.\""},
    {"a..b", false, true, "\"a..b\""},
    {"a b", false, true, "\"a b\""},
    {"a@b", false, true, "\"a@b\""},
    {"a\"b", false, true, "\"a\\\"b\""},
    {"a\\b", false, true, "\"a\\\\b\""},
    {"jürgen", true, false, "jürgen"},
    {"jürgen", false, true, "\"jürgen\""},
};

START_TEST(test_quote)
{
    const struct quote_row *r = &quote_rows[_i];
    size_t len = strlen(r->local), n;
    char out[80], tiny[3];

    ck_assert_msg(smtp_local_needs_quoting(r->local, len, r->utf8) == r->needs,
                  "%s: needs quoting: got %d, want %d", r->local, !r->needs,
                  r->needs);
    n = smtp_local_quote(r->local, len, r->utf8, out, sizeof(out));
    ck_assert_msg(strcmp(out, r->quoted) == 0, "%s: got %s, want %s",
                  r->local, out, r->quoted);
    ck_assert_uint_eq(n, strlen(r->quoted));
    /* Truncated like snprintf(). */
    n = smtp_local_quote(r->local, len, r->utf8, tiny, sizeof(tiny));
    ck_assert_uint_eq(n, strlen(r->quoted));
    ck_assert_uint_le(strlen(tiny), 2);
    ck_assert(strncmp(tiny, r->quoted, strlen(tiny)) == 0);
}
END_TEST

static const struct xtext_row {
    const char *in;
    bool valid;
    const char *decoded;
} xtext_rows[] = {
    {"QQ314159", true, "QQ314159"},
    {"a+2Bb", true, "a+b"},
    {"rfc822+3Ba@b", true, "rfc822;a@b"},
    {"", true, ""},
    {"a+2b", false, NULL},
    {"a+2", false, NULL},
    {"a+", false, NULL},
    {"a=b", false, NULL},
    {"a b", false, NULL},
    {"a\x7f", false, NULL},
    {"\xc3\xa4", false, NULL},
};

START_TEST(test_xtext)
{
    const struct xtext_row *r = &xtext_rows[_i];
    char out[64];

    ck_assert_msg(smtp_xtext_valid(r->in, strlen(r->in)) == r->valid,
                  "%s: got %d, want %d", r->in, !r->valid, r->valid);
    if (r->decoded) {
        size_t n = smtp_xtext_decode(r->in, strlen(r->in), out, sizeof(out));

        ck_assert_str_eq(out, r->decoded);
        ck_assert_uint_eq(n, strlen(r->decoded));
    }
}
END_TEST

static const struct utf8_row {
    const char *in;
    bool valid;
} utf8_rows[] = {
    {"plain", true},
    {"jürgen", true},
    {"日本", true},
    {"\xf0\x9f\x98\x80", true},       /* U+1F600 */
    {"\xc3", false},                  /* truncated */
    {"\xc0\x80", false},              /* overlong NUL */
    {"\xe0\x80\xaf", false},          /* overlong */
    {"\xed\xa0\x80", false},          /* surrogate */
    {"\xf4\x90\x80\x80", false},      /* above U+10FFFF */
    {"\xff", false},
    {"\x80", false},
};

START_TEST(test_utf8)
{
    const struct utf8_row *r = &utf8_rows[_i];

    ck_assert_msg(smtp_utf8_valid(r->in, strlen(r->in)) == r->valid,
                  "row %d: got %d, want %d", _i, !r->valid, r->valid);
}
END_TEST

/* Every prefix of a valid path is refused without reading past its end
 * (run under ASan, with each prefix in its own allocation). */
START_TEST(test_prefixes)
{
    const char *in = "<@a.example,@b.example:\"q\\\"x\"@[IPv6:2001:db8::1]>";
    size_t len = strlen(in);
    struct smtp_path p;

    for (size_t n = 0; n < len; n++) {
        char *copy = malloc(n ? n : 1);

        memcpy(copy, in, n);
        ck_assert_msg(smtp_path_parse(copy, n, NUL | PM | U8, &p, NULL,
                                      NULL) != 0,
                      "prefix of %zu accepted", n);
        free(copy);
    }
    ck_assert_int_eq(smtp_path_parse(in, len, 0, &p, NULL, NULL), 0);
    ck_assert_str_eq(p.mailbox, "\"q\\\"x\"@[IPv6:2001:db8::1]");
}
END_TEST

static Suite *
smtp_addr_suite(void)
{
    Suite *s = suite_create("smtp_addr");
    TCase *tc;

    tc = tcase_create("path");
    tcase_add_loop_test(tc, test_ok, 0, NROWS(ok_rows));
    tcase_add_test(tc, test_flags);
    tcase_add_loop_test(tc, test_bad, 0, NROWS(bad_rows));
    tcase_add_test(tc, test_limits_exact);
    tcase_add_test(tc, test_utf8_refusal);
    tcase_add_test(tc, test_len_bounds);
    tcase_add_test(tc, test_prefixes);
    suite_add_tcase(s, tc);

    tc = tcase_create("mailbox");
    tcase_add_loop_test(tc, test_mailbox, 0, NROWS(mbox_rows));
    suite_add_tcase(s, tc);

    tc = tcase_create("helpers");
    tcase_add_loop_test(tc, test_quote, 0, NROWS(quote_rows));
    tcase_add_loop_test(tc, test_xtext, 0, NROWS(xtext_rows));
    tcase_add_loop_test(tc, test_utf8, 0, NROWS(utf8_rows));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(smtp_addr_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
