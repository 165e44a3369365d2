/*
 * test_passwd.c - password hashes (lib/passwd.h): the round trip with the
 * default parameters, wrong passwords, the RFC 7914 test vector in our
 * string format, parameters read back from the string, salts that differ,
 * rehash advice, and a table of malformed strings that must be refused
 * with a reason (never a crash, never a match).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "lib/err.h"
#include "lib/passwd.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Quick parameters for tests that need many hashes. */
static const struct passwd_params quick = {
    .ln = 4, .r = 8, .p = 1, .saltlen = 16, .keylen = 32};

/* RFC 7914 section 12, third vector: scrypt("pleaseletmein",
 * "SodiumChloride", N=16384, r=8, p=1, dkLen=64), written in our format. */
static const char rfc7914[] =
    "$scrypt$ln=14,r=8,p=1$U29kaXVtQ2hsb3JpZGU$cCO9yzr9c0hGHAbNgf046/2o+7qQ"
    "T44+qbVD9lRdofLVQylVYT8Pz2LUlwUkKpr55h6F3A1lHkDfzwF7RVdYhw";

/* 16 zero bytes of salt and 32 of key, in canonical base64. */
#define SALT0 "AAAAAAAAAAAAAAAAAAAAAA"
#define KEY0 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static int
verify(const char *pw, const char *stored)
{
    char why[256] = "";

    return passwd_verify(pw, strlen(pw), stored, why, sizeof(why));
}

/* Hashing. */

START_TEST(test_round_trip_default)
{
    char h[PASSWD_MAX], why[256] = "";
    struct passwd_params pp;
    int rc;

    rc = passwd_hash("correct horse", 13, h, sizeof(h));
    ck_assert_msg(rc == 0, "passwd_hash: got %d, want 0", rc);
    ck_assert_msg(strncmp(h, "$scrypt$ln=15,r=8,p=1$", 22) == 0,
                  "default hash: got \"%s\"", h);
    /* 22 characters of salt, "$", 43 of key. */
    ck_assert_msg(strlen(h) == 22 + 22 + 1 + 43, "length: got %zu in %s",
                  strlen(h), h);
    ck_assert(strstr(h, "correct horse") == NULL);
    rc = passwd_verify("correct horse", 13, h, why, sizeof(why));
    ck_assert_msg(rc == 0, "right password: got %d (%s), want 0", rc, why);
    rc = passwd_verify("correct horsf", 13, h, why, sizeof(why));
    ck_assert_msg(rc == 1, "wrong password: got %d, want 1", rc);
    rc = passwd_verify("correct hors", 12, h, why, sizeof(why));
    ck_assert_msg(rc == 1, "prefix of the password: got %d, want 1", rc);
    ck_assert_int_eq(passwd_parse(h, &pp, why, sizeof(why)), 0);
    ck_assert_int_eq(pp.ln, 15);
    ck_assert_int_eq(pp.r, 8);
    ck_assert_int_eq(pp.p, 1);
    ck_assert_uint_eq(pp.saltlen, 16);
    ck_assert_uint_eq(pp.keylen, 32);
    ck_assert_int_eq(passwd_needs_rehash(h), 0);
}
END_TEST

static const struct pw_row {
    const char *label;
    const char *pw;
    size_t len;
    const char *wrong;
    size_t wronglen;
} pw_rows[] = {
    {"ascii", "hunter2", 7, "Hunter2", 7},
    {"empty", "", 0, " ", 1},
    {"utf-8", "p\xc3\xa4ssw\xc3\xb6rd", 10, "passwort", 8},
    {"inner NUL", "ab\0cd", 5, "ab\0ce", 5},
    {"NUL is not the end", "ab\0cd", 5, "ab", 2},
    {"long",
     "0123456789012345678901234567890123456789012345678901234567890"
     "1234567890123456789012345678901234567890",
     101, "0123456789", 10},
};

START_TEST(test_round_trip_table)
{
    const struct pw_row *r = &pw_rows[_i];
    char h[PASSWD_MAX], why[256] = "";
    int rc;

    rc = passwd_hash_params(r->pw, r->len, &quick, h, sizeof(h));
    ck_assert_msg(rc == 0, "%s: hash: got %d, want 0", r->label, rc);
    rc = passwd_verify(r->pw, r->len, h, why, sizeof(why));
    ck_assert_msg(rc == 0, "%s: right: got %d (%s), want 0", r->label, rc, why);
    rc = passwd_verify(r->wrong, r->wronglen, h, why, sizeof(why));
    ck_assert_msg(rc == 1, "%s: wrong: got %d, want 1", r->label, rc);
}
END_TEST

START_TEST(test_salts_differ)
{
    char a[PASSWD_MAX], b[PASSWD_MAX];
    const char *sa, *sb;

    ck_assert_int_eq(passwd_hash("same", 4, a, sizeof(a)), 0);
    ck_assert_int_eq(passwd_hash("same", 4, b, sizeof(b)), 0);
    ck_assert_msg(strcmp(a, b) != 0, "two hashes are equal: %s", a);
    /* Salt and key both differ, not just one of them. */
    sa = strrchr(a, '$');
    sb = strrchr(b, '$');
    ck_assert_str_ne(sa, sb);
    ck_assert_msg(strncmp(a, b, (size_t)(sa - a)) != 0,
                  "same salt twice: %s %s", a, b);
    ck_assert_int_eq(verify("same", a), 0);
    ck_assert_int_eq(verify("same", b), 0);
}
END_TEST

START_TEST(test_known_vector)
{
    struct passwd_params pp;
    char why[256] = "";
    int rc;

    rc = verify("pleaseletmein", rfc7914);
    ck_assert_msg(rc == 0, "RFC 7914 vector: got %d, want 0", rc);
    ck_assert_int_eq(verify("pleaseletmeim", rfc7914), 1);
    ck_assert_int_eq(passwd_parse(rfc7914, &pp, why, sizeof(why)), 0);
    ck_assert_int_eq(pp.ln, 14);
    ck_assert_uint_eq(pp.saltlen, 14);
    ck_assert_uint_eq(pp.keylen, 64);
    ck_assert_int_eq(passwd_needs_rehash(rfc7914), 1);
}
END_TEST

static const struct params_row {
    const char *label;
    struct passwd_params pp;
} params_rows[] = {
    {"small N", {.ln = 1, .r = 1, .p = 1, .saltlen = 8, .keylen = 16}},
    {"r=4 p=3", {.ln = 6, .r = 4, .p = 3, .saltlen = 16, .keylen = 32}},
    {"long salt and key",
     {.ln = 5, .r = 8, .p = 1, .saltlen = 64, .keylen = 64}},
    {"odd lengths", {.ln = 5, .r = 2, .p = 2, .saltlen = 17, .keylen = 31}},
};

/* Other parameters survive the round trip through the string. */
START_TEST(test_params_round_trip)
{
    const struct params_row *r = &params_rows[_i];
    struct passwd_params got;
    char h[PASSWD_MAX], why[256] = "";
    int rc;

    rc = passwd_hash_params("pw", 2, &r->pp, h, sizeof(h));
    ck_assert_msg(rc == 0, "%s: hash: got %d, want 0", r->label, rc);
    rc = passwd_parse(h, &got, why, sizeof(why));
    ck_assert_msg(rc == 0, "%s: parse %s: got %d (%s)", r->label, h, rc, why);
    ck_assert_msg(got.ln == r->pp.ln && got.r == r->pp.r && got.p == r->pp.p &&
                      got.saltlen == r->pp.saltlen &&
                      got.keylen == r->pp.keylen,
                  "%s: %s parsed as ln=%d r=%d p=%d salt=%zu key=%zu", r->label,
                  h, got.ln, got.r, got.p, got.saltlen, got.keylen);
    ck_assert_msg(verify("pw", h) == 0, "%s: no match", r->label);
    ck_assert_msg(verify("pW", h) == 1, "%s: wrong one matched", r->label);
    ck_assert_int_eq(passwd_needs_rehash(h), 1);
}
END_TEST

static const struct bad_params_row {
    const char *label;
    struct passwd_params pp;
} bad_params_rows[] = {
    {"ln 0", {.ln = 0, .r = 8, .p = 1, .saltlen = 16, .keylen = 32}},
    {"r 0", {.ln = 4, .r = 0, .p = 1, .saltlen = 16, .keylen = 32}},
    {"p 0", {.ln = 4, .r = 8, .p = 0, .saltlen = 16, .keylen = 32}},
    {"too much memory",
     {.ln = 22, .r = 8, .p = 1, .saltlen = 16, .keylen = 32}},
    {"N too big for r=1",
     {.ln = 16, .r = 1, .p = 1, .saltlen = 16, .keylen = 32}},
    {"short salt", {.ln = 4, .r = 8, .p = 1, .saltlen = 7, .keylen = 32}},
    {"long salt", {.ln = 4, .r = 8, .p = 1, .saltlen = 65, .keylen = 32}},
    {"short key", {.ln = 4, .r = 8, .p = 1, .saltlen = 16, .keylen = 15}},
    {"long key", {.ln = 4, .r = 8, .p = 1, .saltlen = 16, .keylen = 65}},
};

START_TEST(test_bad_params)
{
    const struct bad_params_row *r = &bad_params_rows[_i];
    char h[PASSWD_MAX] = "x";
    int rc = passwd_hash_params("pw", 2, &r->pp, h, sizeof(h));

    ck_assert_msg(rc == ERR_INVAL, "%s: got %d, want ERR_INVAL", r->label, rc);
    ck_assert_msg(h[0] == '\0', "%s: output left \"%s\"", r->label, h);
}
END_TEST

START_TEST(test_small_buffer)
{
    char h[40];
    int rc = passwd_hash_params("pw", 2, &quick, h, sizeof(h));

    ck_assert_msg(rc == ERR_INVAL, "got %d, want ERR_INVAL", rc);
    ck_assert_msg(h[0] == '\0', "a truncated hash was left: %s", h);
}
END_TEST

/* Reading stored strings. */

static const struct rehash_row {
    const char *label;
    const char *stored;
    int want;
} rehash_rows[] = {
    {"default", "$scrypt$ln=15,r=8,p=1$" SALT0 "$" KEY0, 0},
    {"stronger N", "$scrypt$ln=16,r=8,p=1$" SALT0 "$" KEY0, 0},
    {"stronger r and p", "$scrypt$ln=15,r=16,p=2$" SALT0 "$" KEY0, 0},
    {"weaker N", "$scrypt$ln=14,r=8,p=1$" SALT0 "$" KEY0, 1},
    {"weaker r", "$scrypt$ln=17,r=4,p=1$" SALT0 "$" KEY0, 1},
    {"short salt", "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAA$" KEY0, 1},
    {"short key", "$scrypt$ln=15,r=8,p=1$" SALT0 "$AAAAAAAAAAAAAAAAAAAAAA", 1},
    {"malformed", "$scrypt$ln=15,r=8$" SALT0 "$" KEY0, ERR_MALFORMED},
};

START_TEST(test_needs_rehash)
{
    const struct rehash_row *r = &rehash_rows[_i];
    int got = passwd_needs_rehash(r->stored);

    ck_assert_msg(got == r->want, "%s: got %d, want %d", r->label, got,
                  r->want);
}
END_TEST

static const struct bad_row {
    const char *label;
    const char *stored;
} bad_rows[] = {
    {"empty", ""},
    {"prefix only", "$scrypt$"},
    {"bcrypt", "$2y$10$abcdefghijklmnopqrstuuAbCdEfGhIjKlMnOpQrStUvWxYz01234"},
    {"plain text", "hunter2"},
    {"uppercase id", "$SCRYPT$ln=15,r=8,p=1$" SALT0 "$" KEY0},
    {"no parameters", "$scrypt$$" SALT0 "$" KEY0},
    {"parameters only", "$scrypt$ln=15,r=8,p=1"},
    {"parameters then $", "$scrypt$ln=15,r=8,p=1$"},
    {"no key", "$scrypt$ln=15,r=8,p=1$" SALT0},
    {"empty key", "$scrypt$ln=15,r=8,p=1$" SALT0 "$"},
    {"empty salt", "$scrypt$ln=15,r=8,p=1$$" KEY0},
    {"parameters out of order", "$scrypt$r=8,ln=15,p=1$" SALT0 "$" KEY0},
    {"missing p", "$scrypt$ln=15,r=8$" SALT0 "$" KEY0},
    {"extra parameter", "$scrypt$ln=15,r=8,p=1,x=2$" SALT0 "$" KEY0},
    {"space", "$scrypt$ln=15, r=8,p=1$" SALT0 "$" KEY0},
    {"sign", "$scrypt$ln=+15,r=8,p=1$" SALT0 "$" KEY0},
    {"negative", "$scrypt$ln=-15,r=8,p=1$" SALT0 "$" KEY0},
    {"leading zero", "$scrypt$ln=015,r=8,p=1$" SALT0 "$" KEY0},
    {"no digits", "$scrypt$ln=,r=8,p=1$" SALT0 "$" KEY0},
    {"hex", "$scrypt$ln=0xf,r=8,p=1$" SALT0 "$" KEY0},
    {"overflow", "$scrypt$ln=99999999999999999999,r=8,p=1$" SALT0 "$" KEY0},
    {"ln 0", "$scrypt$ln=0,r=8,p=1$" SALT0 "$" KEY0},
    {"ln 31", "$scrypt$ln=31,r=8,p=1$" SALT0 "$" KEY0},
    {"r 0", "$scrypt$ln=15,r=0,p=1$" SALT0 "$" KEY0},
    {"p 0", "$scrypt$ln=15,r=8,p=0$" SALT0 "$" KEY0},
    {"4 GiB", "$scrypt$ln=22,r=8,p=1$" SALT0 "$" KEY0},
    {"huge p", "$scrypt$ln=1,r=8,p=999999999$" SALT0 "$" KEY0},
    {"N too big for r=1", "$scrypt$ln=16,r=1,p=1$" SALT0 "$" KEY0},
    {"salt too short", "$scrypt$ln=15,r=8,p=1$AAAAAAAAAA$" KEY0},
    {"salt too long",
     "$scrypt$ln=15,r=8,p=1$" SALT0 SALT0 SALT0 SALT0 "$" KEY0},
    {"key too short", "$scrypt$ln=15,r=8,p=1$" SALT0 "$AAAAAAAAAAAAAAAAAAAA"},
    {"key too long", "$scrypt$ln=15,r=8,p=1$" SALT0 "$" KEY0 KEY0 KEY0},
    {"padding", "$scrypt$ln=15,r=8,p=1$" SALT0 "==$" KEY0},
    {"bad character", "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAA*AAAAAAAAAA$" KEY0},
    {"url-safe alphabet", "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAA-AAAAAAAAAA$" KEY0},
    {"non-canonical bits",
     "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAB$" KEY0},
    {"impossible length",
     "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAAAAA$" KEY0},
    {"trailing field", "$scrypt$ln=15,r=8,p=1$" SALT0 "$" KEY0 "$x"},
    {"trailing newline", "$scrypt$ln=15,r=8,p=1$" SALT0 "$" KEY0 "\n"},
    {"trailing dollar", "$scrypt$ln=15,r=8,p=1$" SALT0 "$" KEY0 "$"},
    {"high bytes", "$scrypt$ln=15,r=8,p=1$\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8"
                   "\xf7\xf6\xf5$" KEY0},
};

START_TEST(test_malformed)
{
    const struct bad_row *r = &bad_rows[_i];
    struct passwd_params pp;
    char why[256] = "";
    int rc;

    rc = passwd_verify("pw", 2, r->stored, why, sizeof(why));
    ck_assert_msg(rc == ERR_MALFORMED, "%s: verify: got %d, want %d", r->label,
                  rc, ERR_MALFORMED);
    ck_assert_msg(why[0] != '\0', "%s: no reason given", r->label);
    why[0] = '\0';
    rc = passwd_parse(r->stored, &pp, why, sizeof(why));
    ck_assert_msg(rc == ERR_MALFORMED, "%s: parse: got %d", r->label, rc);
    ck_assert_msg(why[0] != '\0', "%s: no reason from parse", r->label);
    rc = passwd_needs_rehash(r->stored);
    ck_assert_msg(rc == ERR_MALFORMED, "%s: needs_rehash: got %d", r->label,
                  rc);
    /* A NULL reason buffer is allowed. */
    rc = passwd_verify("pw", 2, r->stored, NULL, 0);
    ck_assert_msg(rc == ERR_MALFORMED, "%s: verify without why: got %d",
                  r->label, rc);
}
END_TEST

START_TEST(test_null_stored)
{
    char why[64] = "";

    ck_assert_int_eq(passwd_verify("pw", 2, NULL, why, sizeof(why)),
                     ERR_MALFORMED);
    ck_assert_int_eq(passwd_needs_rehash(NULL), ERR_MALFORMED);
}
END_TEST

/* A stored hash whose key was changed by one bit never matches. */
START_TEST(test_tampered_key)
{
    char h[PASSWD_MAX], *last;

    ck_assert_int_eq(passwd_hash_params("pw", 2, &quick, h, sizeof(h)), 0);
    ck_assert_int_eq(verify("pw", h), 0);
    last = strrchr(h, '$') + 1;
    *last = *last == 'A' ? 'B' : 'A';
    ck_assert_int_eq(verify("pw", h), 1);
}
END_TEST

static Suite *
passwd_suite(void)
{
    Suite *s = suite_create("passwd");
    TCase *tc;

    tc = tcase_create("hash");
    tcase_add_test(tc, test_round_trip_default);
    tcase_add_loop_test(tc, test_round_trip_table, 0, NROWS(pw_rows));
    tcase_add_test(tc, test_salts_differ);
    tcase_add_test(tc, test_known_vector);
    tcase_add_loop_test(tc, test_params_round_trip, 0, NROWS(params_rows));
    tcase_add_loop_test(tc, test_bad_params, 0, NROWS(bad_params_rows));
    tcase_add_test(tc, test_small_buffer);
    tcase_add_test(tc, test_tampered_key);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse");
    tcase_add_loop_test(tc, test_needs_rehash, 0, NROWS(rehash_rows));
    tcase_add_loop_test(tc, test_malformed, 0, NROWS(bad_rows));
    tcase_add_test(tc, test_null_stored);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(passwd_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
