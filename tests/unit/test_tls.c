/*
 * test_tls.c - the self-signed certificate made on first start
 * (lib/tls.h, tls_self_signed_ensure): several processes that start at
 * once on a fresh folder all end up with one key and its certificate,
 * never a key beside another's certificate; a pair already there is kept;
 * a pair with a file missing is made anew.
 *
 * Every test runs in its own process (CK_FORK) on its own temporary
 * folder; creators are forked children released together through a pipe.
 */
#include <errno.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "lib/tls.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

struct fx {
    char base[64], dir[96], cert[128], key[128];
};

static void
fx_init(struct fx *f)
{
    snprintf(f->base, sizeof(f->base), "/tmp/samotop-tls-XXXXXX");
    ck_assert_msg(mkdtemp(f->base) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(f->dir, sizeof(f->dir), "%s/tls", f->base);
    snprintf(f->cert, sizeof(f->cert), "%s/cert.pem", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/key.pem", f->dir);
}

static void
fx_done(struct fx *f)
{
    test_rm_tree(f->base);
}

/* Whether cert and key load as a server context (the key matches). */
static bool
pair_ok(const struct fx *f, char *why, size_t whylen)
{
    tls_ctx_t *ctx = tls_server_new(f->cert, f->key, why, whylen);
    bool ok = ctx != NULL;

    tls_ctx_destroy(&ctx);
    return ok;
}

/* Only cert.pem, key.pem and the lock file: no temporary left. */
static void
want_only_pair(const char *label, const struct fx *f)
{
    DIR *d = opendir(f->dir);
    struct dirent *e;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL)
        ck_assert_msg(strcmp(e->d_name, ".") == 0 ||
                          strcmp(e->d_name, "..") == 0 ||
                          strcmp(e->d_name, "cert.pem") == 0 ||
                          strcmp(e->d_name, "key.pem") == 0 ||
                          strcmp(e->d_name, ".lock") == 0,
                      "%s: %s left in %s", label, e->d_name, f->dir);
    closedir(d);
}

static const struct race_row {
    const char *label;
    int creators, rounds;
} race_rows[] = {
    {"one creator", 1, 2},
    {"two at once", 2, 10},
    {"eight at once", 8, 10},
};

/* Each creator, once released, makes sure of the pair and loads it at
 * once, as a listener does; it exits 0 when that worked. */
static void
creator(const struct fx *f, int gate)
{
    char why[512], c;
    ssize_t n = read(gate, &c, 1); /* returns at EOF: all go together */

    (void)n;
    if (tls_self_signed_ensure(f->dir, "mx.example.test", why, sizeof(why)) !=
        0) {
        fprintf(stderr, "creator %d: ensure: %s\n", (int)getpid(), why);
        _exit(1);
    }
    if (!pair_ok(f, why, sizeof(why))) {
        fprintf(stderr, "creator %d: load: %s\n", (int)getpid(), why);
        _exit(2);
    }
    _exit(0);
}

START_TEST(test_creators_race)
{
    const struct race_row *r = &race_rows[_i];

    for (int round = 0; round < r->rounds; round++) {
        pid_t pids[16];
        int gate[2];
        char why[512];
        struct fx f;
        struct stat st;

        fx_init(&f);
        ck_assert_int_eq(pipe(gate), 0);
        for (int i = 0; i < r->creators; i++) {
            pids[i] = fork();
            ck_assert_int_ge(pids[i], 0);
            if (pids[i] == 0) {
                close(gate[1]);
                creator(&f, gate[0]);
            }
        }
        close(gate[0]);
        close(gate[1]);
        for (int i = 0; i < r->creators; i++) {
            int status;

            ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
            ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                          "%s, round %d: creator %d failed: status %d",
                          r->label, round, i, status);
        }
        ck_assert_msg(pair_ok(&f, why, sizeof(why)), "%s, round %d: %s",
                      r->label, round, why);
        want_only_pair(r->label, &f);
        ck_assert_int_eq(stat(f.key, &st), 0);
        ck_assert_msg((st.st_mode & 07777) == 0600, "%s: key mode %o", r->label,
                      st.st_mode & 07777);
        fx_done(&f);
    }
}
END_TEST

/* A pair already there is kept as it is; one with a file missing is made
 * anew, whole. */
START_TEST(test_existing_pair)
{
    struct fx f;
    struct stat k1, c1, k2, c2;
    char why[512];

    fx_init(&f);
    ck_assert_int_eq(tls_self_signed_ensure(f.dir, "a.test", why, sizeof(why)),
                     0);
    ck_assert_int_eq(stat(f.key, &k1), 0);
    ck_assert_int_eq(stat(f.cert, &c1), 0);
    ck_assert_int_eq(tls_self_signed_ensure(f.dir, "a.test", why, sizeof(why)),
                     0);
    ck_assert_int_eq(stat(f.key, &k2), 0);
    ck_assert_int_eq(stat(f.cert, &c2), 0);
    ck_assert_msg(k1.st_ino == k2.st_ino && c1.st_ino == c2.st_ino,
                  "a pair already there was made again");
    ck_assert_int_eq(unlink(f.key), 0);
    ck_assert_int_eq(tls_self_signed_ensure(f.dir, "a.test", why, sizeof(why)),
                     0);
    ck_assert_int_eq(stat(f.cert, &c2), 0);
    ck_assert_msg(c1.st_ino != c2.st_ino, "the certificate was kept "
                                          "without its key");
    ck_assert_msg(pair_ok(&f, why, sizeof(why)), "remade pair: %s", why);
    want_only_pair("remade", &f);
    fx_done(&f);
}
END_TEST

/* A folder that cannot be made is an error with a reason. */
START_TEST(test_dir_unusable)
{
    struct fx f;
    char why[512] = "";
    FILE *file;

    fx_init(&f);
    file = fopen(f.dir, "w"); /* a file where the folder should be */
    ck_assert_ptr_nonnull(file);
    fclose(file);
    ck_assert_int_ne(tls_self_signed_ensure(f.dir, "a.test", why, sizeof(why)),
                     0);
    ck_assert_msg(strstr(why, f.dir) != NULL, "reason \"%s\"", why);
    fx_done(&f);
}
END_TEST

static Suite *
tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("self_signed");

    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_creators_race, 0, NROWS(race_rows));
    tcase_add_test(tc, test_existing_pair);
    tcase_add_test(tc, test_dir_unusable);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(tls_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
