/*
 * test_shard.c - lib/shard.h: the hash and the jump that place accounts
 * on mailbox shards. The golden values pin both forever (a change would
 * move every mailbox to another process); they were computed by an
 * independent Python version of FNV-1a 64 and Lamping and Veach's jump.
 * The moved share from n to n + 1 shards is about 1/(n + 1), and every
 * moved account goes to the new shard.
 */
#include <stdio.h>
#include <string.h>

#include <check.h>

#include "lib/shard.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

static const struct golden_row {
    const char *addr;
    uint64_t hash;
    int of2, of3, of10, of1000;
} golden_rows[] = {
    {"alice@example.test", 0xaefb1876ddbddfddull, 1, 1, 7, 302},
    {"Bob@Example.Test", 0x4706656a7c28fef0ull, 0, 0, 8, 586},
    {"carol@example.test", 0xa2827d04921e1ee2ull, 0, 2, 5, 453},
    {"postmaster@example.org", 0xb84fd239167ff94full, 0, 0, 0, 158},
    {"u1@shard.test", 0x4a87dc97a70a70f7ull, 1, 1, 8, 36},
    /* The FNV-1a 64 offset basis, and the reference value of "a". */
    {"", 0xcbf29ce484222325ull, 1, 1, 1, 266},
};

START_TEST(test_golden)
{
    const struct golden_row *r = &golden_rows[_i];
    size_t len = strlen(r->addr);
    uint64_t h = shard_hash(r->addr, len);

    ck_assert_msg(h == r->hash, "%s: got hash %016llx, want %016llx", r->addr,
                  (unsigned long long)h, (unsigned long long)r->hash);
    ck_assert_msg(shard_of(r->addr, len, 1) == 0, "%s: one shard", r->addr);
    ck_assert_msg(shard_of(r->addr, len, 2) == r->of2, "%s: got %d, want %d",
                  r->addr, shard_of(r->addr, len, 2), r->of2);
    ck_assert_msg(shard_of(r->addr, len, 3) == r->of3, "%s: got %d, want %d",
                  r->addr, shard_of(r->addr, len, 3), r->of3);
    ck_assert_msg(shard_of(r->addr, len, 10) == r->of10, "%s: got %d, want %d",
                  r->addr, shard_of(r->addr, len, 10), r->of10);
    ck_assert_msg(shard_of(r->addr, len, 1000) == r->of1000,
                  "%s: got %d, want %d", r->addr, shard_of(r->addr, len, 1000),
                  r->of1000);
}
END_TEST

START_TEST(test_fnv_reference)
{
    ck_assert_uint_eq(shard_hash("a", 1), 0xaf63dc4c8601ec8cull);
    /* Case does not matter; other bytes do. */
    ck_assert_uint_eq(shard_hash("ALICE@Example.TEST", 18),
                      shard_hash("alice@example.test", 18));
    ck_assert_uint_ne(shard_hash("alice@example.test", 18),
                      shard_hash("alice@example.tesu", 18));
}
END_TEST

#define NACCOUNTS 20000

/* From n to n + 1 shards: about 1/(n + 1) of the accounts move, each to
 * the new shard n, and the shards stay about even. */
START_TEST(test_moved_share)
{
    static const int ns[] = {1, 2, 3, 4, 7, 15};
    int n = ns[_i], moved = 0, count[16] = {0};
    char addr[64];

    for (int i = 0; i < NACCOUNTS; i++) {
        int len = snprintf(addr, sizeof(addr), "user%d@example.test", i);
        int a = shard_of(addr, (size_t)len, n);
        int b = shard_of(addr, (size_t)len, n + 1);

        ck_assert_msg(a >= 0 && a < n, "n=%d: shard %d out of range", n, a);
        count[b]++;
        if (a != b) {
            moved++;
            ck_assert_msg(b == n, "n=%d: %s moved from %d to %d, not to %d", n,
                          addr, a, b, n);
        }
    }
    {
        double share = (double)moved / NACCOUNTS, want = 1.0 / (n + 1);

        ck_assert_msg(share > want * 0.9 && share < want * 1.1,
                      "n=%d: got moved share %.4f, want about %.4f", n, share,
                      want);
    }
    for (int k = 0; k <= n; k++)
        ck_assert_msg(count[k] > NACCOUNTS / (n + 1) * 8 / 10,
                      "n=%d: shard %d has %d of %d", n + 1, k, count[k],
                      NACCOUNTS);
}
END_TEST

static const struct svc_row {
    const char *label;
    int k, n;
    const char *want; /* NULL: refused */
} svc_rows[] = {
    {"one shard keeps the name", 0, 1, "mailbox"},
    {"no sharding", 0, 0, "mailbox"},
    {"first of three", 0, 3, "mailbox.0"},
    {"last of three", 2, 3, "mailbox.2"},
    {"past the last", 3, 3, NULL},
    {"negative", -1, 3, NULL},
    {"too many", 0, SHARD_MAX + 1, NULL},
};

START_TEST(test_service)
{
    const struct svc_row *r = &svc_rows[_i];
    char out[32];
    const char *got = shard_service(out, sizeof(out), "mailbox", r->k, r->n);

    if (r->want == NULL)
        ck_assert_msg(got == NULL, "%s: got %s, want NULL", r->label, got);
    else
        ck_assert_msg(got != NULL && strcmp(got, r->want) == 0,
                      "%s: got %s, want %s", r->label, got ? got : "NULL",
                      r->want);
}
END_TEST

START_TEST(test_service_too_long)
{
    char out[8];

    ck_assert_ptr_null(shard_service(out, sizeof(out), "mailbox", 5, 10));
    ck_assert_ptr_nonnull(shard_service(out, sizeof(out), "mail", 5, 10));
    ck_assert_str_eq(out, "mail.5");
}
END_TEST

static Suite *
shard_suite(void)
{
    Suite *s = suite_create("shard");
    TCase *tc = tcase_create("hash");

    tcase_add_loop_test(tc, test_golden, 0, NROWS(golden_rows));
    tcase_add_test(tc, test_fnv_reference);
    suite_add_tcase(s, tc);
    tc = tcase_create("jump");
    tcase_add_loop_test(tc, test_moved_share, 0, 6);
    suite_add_tcase(s, tc);
    tc = tcase_create("service");
    tcase_add_loop_test(tc, test_service, 0, NROWS(svc_rows));
    tcase_add_test(tc, test_service_too_long);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(shard_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
