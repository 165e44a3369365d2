/*
 * select_time.c - times SELECT of a settled folder inside the process, as
 * a new session of samotop-mailbox does it: a store opened, the folder
 * selected (mstore_select(), the first-unseen number asked for), then
 * the view and store destroyed. The first SELECT builds the index (and
 * claims new/); the timed ones come after a pause, the folder settled.
 *
 * usage: select_time DATA_DIR ACCOUNT FOLDER [ROUNDS]
 * ST_OTHER=1: another session keeps the folder selected meanwhile.
 *
 * Example, on a copy of bench/imap's mail:
 *   mkdir -p D/mail/example.test/alice
 *   cp -al /tmp/bench-imap/pristine-samotop/. D/mail/example.test/alice/
 *   select_time D alice@example.test INBOX
 *
 * Built by hand (not part of the tree's build), from the top of the tree:
 *   cc -O2 -std=gnu11 -D_GNU_SOURCE -I. bench/imap/select_time.c
 *     actors/mailbox/mstore*.c actors/mailbox/maildir.c lib/buf.c
 *     lib/err.c lib/log.c lib/xalloc.c lib/clock.c -o /tmp/select_time
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "actors/mailbox/mstore.h"

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
cpu(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    char why[256];
    int rounds = argc > 4 ? atoi(argv[4]) : 50;
    double *wall, *cp;
    mstore_t *ms;
    mstore_view_t *v;
    /* a session that stays on the folder, as another client would */
    mstore_t *other;
    mstore_view_t *ov;

    if (argc < 4) {
        fprintf(stderr, "usage: select_time DATA ACCOUNT FOLDER [ROUNDS]\n");
        return 2;
    }
    wall = calloc((size_t)rounds, sizeof(*wall));
    cp = calloc((size_t)rounds, sizeof(*cp));
    ms = mstore_open(argv[1], argv[2], NULL, why, sizeof(why));
    if (ms == NULL) {
        fprintf(stderr, "open: %s\n", why);
        return 1;
    }
    double t0 = now();
    v = mstore_select(ms, argv[3], false);
    if (v == NULL) {
        fprintf(stderr, "select: %s\n", mstore_err_text(ms));
        return 1;
    }
    printf("first select: %.4f s, exists %u\n", now() - t0,
           mstore_view_exists(v));
    mstore_view_destroy(&v);
    mstore_destroy(&ms);
    sleep(2);
    other = mstore_open(argv[1], argv[2], NULL, why, sizeof(why));
    ov = getenv("ST_OTHER") ? mstore_select(other, argv[3], false) : NULL;
    for (int i = 0; i < rounds; i++) {
        double w = now(), c = cpu();
        uint32_t u;

        ms = mstore_open(argv[1], argv[2], NULL, why, sizeof(why));
        v = mstore_select(ms, argv[3], false);
        if (v == NULL)
            return 1;
        u = mstore_view_first_unseen(v);
        (void)mstore_view_flag_list(v);
        (void)mstore_view_permanent_flags(v);
        (void)mstore_view_uidnext(v);
        (void)mstore_view_recent(v);
        mstore_view_destroy(&v);
        mstore_destroy(&ms);
        wall[i] = now() - w;
        cp[i] = cpu() - c;
        if (i == 0)
            printf("first unseen %u\n", u);
    }
    mstore_view_destroy(&ov);
    mstore_destroy(&other);
    qsort(wall, (size_t)rounds, sizeof(*wall), cmp_d);
    qsort(cp, (size_t)rounds, sizeof(*cp), cmp_d);
    printf("settled select (open, select, destroy): wall median %.6f s "
           "(min %.6f max %.6f), cpu median %.6f s, %d rounds\n",
           wall[rounds / 2], wall[0], wall[rounds - 1], cp[rounds / 2], rounds);
    return 0;
}
