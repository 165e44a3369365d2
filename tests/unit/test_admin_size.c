/*
 * test_admin_size.c - the sizes samotop-admin reads and prints
 * (tools/admin/admin_size.c), as `user quota ADDRESS SIZE` takes them:
 * plain bytes, K/M/G/T suffixes (powers of 1024), "none", and every kind
 * of bad input refused with a reason. Table-driven.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <check.h>

#include "tools/admin/admin.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

static const struct ok_row {
    const char *label, *in;
    uint64_t want;
} ok_rows[] = {
    {"bytes", "12345", 12345},
    {"zero removes", "0", 0},
    {"none removes", "none", 0},
    {"NONE any case", "NONE", 0},
    {"kilo", "10K", 10240},
    {"kilo lower case", "10k", 10240},
    {"mega", "50M", 50ull << 20},
    {"giga", "2G", 2ull << 30},
    {"tera", "3T", 3ull << 40},
    {"with B", "10MB", 10ull << 20},
    {"with iB", "10MiB", 10ull << 20},
    {"bytes with B", "512B", 512},
    {"leading zeros", "007", 7},
    {"the most", "8192T", 1ull << 53},
};

START_TEST(test_parse_ok)
{
    const struct ok_row *r = &ok_rows[_i];
    const char *why = "unset";
    uint64_t got = 99;
    int rc = admin_size_parse(r->in, &got, &why);

    ck_assert_msg(rc == 0, "%s: got %d (%s), want 0", r->label, rc,
                  why ? why : "-");
    ck_assert_msg(got == r->want, "%s: got %llu, want %llu", r->label,
                  (unsigned long long)got, (unsigned long long)r->want);
}
END_TEST

static const struct bad_row {
    const char *label, *in, *why;
} bad_rows[] = {
    {"empty", "", "empty"},
    {"letters", "lots", "not a number"},
    {"negative", "-5", "not a number"},
    {"space", " 5", "not a number"},
    {"unknown unit", "5X", "unknown unit"},
    {"trailing junk", "5MZ", "unknown unit"},
    {"two units", "5MK", "unknown unit"},
    {"fraction", "1.5G", "unknown unit"},
    {"over the most", "8193T", "too large"},
    {"overflow digits", "99999999999999999999", "too large"},
    {"too long", "000000000000000000000000000000001", "too long"},
};

START_TEST(test_parse_bad)
{
    const struct bad_row *r = &bad_rows[_i];
    const char *why = NULL;
    uint64_t got = 0;
    int rc = admin_size_parse(r->in, &got, &why);

    ck_assert_msg(rc == -1, "%s: got %d, want -1", r->label, rc);
    ck_assert_msg(why != NULL && strstr(why, r->why) != NULL,
                  "%s: got reason %s, want %s", r->label, why ? why : "NULL",
                  r->why);
}
END_TEST

static const struct fmt_row {
    const char *label;
    uint64_t in;
    const char *want;
} fmt_rows[] = {
    {"small", 999, "999"},
    {"kilo", 1536, "1536 (1.5K)"},
    {"mega", 50ull << 20, "52428800 (50.0M)"},
    {"zero", 0, "0"},
};

START_TEST(test_format)
{
    const struct fmt_row *r = &fmt_rows[_i];
    char out[64];

    admin_size_format(r->in, out, sizeof(out));
    ck_assert_msg(strcmp(out, r->want) == 0, "%s: got %s, want %s", r->label,
                  out, r->want);
}
END_TEST

static Suite *
admin_size_suite(void)
{
    Suite *s = suite_create("admin_size");
    TCase *tc = tcase_create("parse");

    tcase_add_loop_test(tc, test_parse_ok, 0, NROWS(ok_rows));
    tcase_add_loop_test(tc, test_parse_bad, 0, NROWS(bad_rows));
    suite_add_tcase(s, tc);
    tc = tcase_create("format");
    tcase_add_loop_test(tc, test_format, 0, NROWS(fmt_rows));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(admin_size_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
