/*
 * test_idna.c - lib/idna.h: U-labels to A-labels (RFC 5891 and UTS #46,
 * non-transitional), ASCII names lower-cased and otherwise left alone,
 * literals untouched, invalid names and small buffers refused.
 */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "lib/err.h"
#include "lib/idna.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

struct idna_row {
    const char *label, *in;
    int rc;
    const char *out;
};

static const struct idna_row rows[] = {
    {"ascii", "example.test", 0, "example.test"},
    {"ascii, upper case", "Example.TEST", 0, "example.test"},
    {"ascii A-label stays", "xn--bcher-kva.test", 0, "xn--bcher-kva.test"},
    {"U-label",
     "b\xc3\xbc"
     "cher.test",
     0, "xn--bcher-kva.test"},
    {"U-label, upper case mapped",
     "B\xc3\x9c"
     "CHER.test",
     0, "xn--bcher-kva.test"},
    {"U-label, NFD input",
     "bu\xcc\x88"
     "cher.test",
     0, "xn--bcher-kva.test"},
    {"sharp s kept (non-transitional)", "fa\xc3\x9f.de", 0, "xn--fa-hia.de"},
    {"every label", "\xc3\xa4.\xc3\xb6.test", 0, "xn--4ca.xn--nda.test"},
    {"address literal untouched", "[192.0.2.1]", 0, "[192.0.2.1]"},
    {"bad UTF-8", "b\xc3(cher.test", ERR_INVAL, NULL},
    {"disallowed code point", "a\xe2\x98\x83\xef\xbf\xbf.test", ERR_INVAL,
     NULL},
};

START_TEST(test_to_ascii)
{
    const struct idna_row *row = &rows[_i];
    char out[256];
    int rc = idna_to_ascii(row->in, out, sizeof(out));

    ck_assert_msg(rc == row->rc, "%s: rc %d, want %d", row->label, rc, row->rc);
    if (row->out)
        ck_assert_msg(strcmp(out, row->out) == 0, "%s: got %s, want %s",
                      row->label, out, row->out);
}
END_TEST

START_TEST(test_small_buffer)
{
    char out[19];

    ck_assert_int_eq(idna_to_ascii("b\xc3\xbc"
                                   "cher.test",
                                   out, 18),
                     ERR_TOO_BIG);
    ck_assert_int_eq(idna_to_ascii("b\xc3\xbc"
                                   "cher.test",
                                   out, 19),
                     0);
    ck_assert_str_eq(out, "xn--bcher-kva.test");
    ck_assert_int_eq(idna_to_ascii("example.test", out, 12), ERR_TOO_BIG);
    ck_assert_int_eq(idna_to_ascii("example.test", out, 0), ERR_TOO_BIG);
    ck_assert(idna_has_non_ascii("b\xc3\xbc"));
    ck_assert(!idna_has_non_ascii("bucher"));
}
END_TEST

/* A label of 63 octets once encoded is the most there may be. */
START_TEST(test_label_too_long)
{
    char in[400], out[512];
    size_t n = 0;

    for (int i = 0; i < 60; i++) {
        memcpy(in + n, "\xc3\xbc", 2);
        n += 2;
    }
    memcpy(in + n, ".test", 6);
    ck_assert_int_eq(idna_to_ascii(in, out, sizeof(out)), ERR_INVAL);
}
END_TEST

static Suite *
idna_suite(void)
{
    Suite *s = suite_create("idna");
    TCase *tc = tcase_create("idna");

    tcase_add_loop_test(tc, test_to_ascii, 0, NROWS(rows));
    tcase_add_test(tc, test_small_buffer);
    tcase_add_test(tc, test_label_too_long);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(idna_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
