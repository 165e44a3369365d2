/*
 * mailbox_metrics.c - the mailbox's metrics (mailbox_metrics.h).
 */
#include <stdio.h>

#include "mailbox_metrics.h"

static struct {
    metric_t *deliveries, *commits, *batch, *commit_time;
} mm;

/* Messages per group commit: 1 alone, up to MAILBOX_BATCH_MAX. */
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128};

void
mailbox_metrics_init(metrics_t *m)
{
    mm.deliveries = metrics_counter(
        m, "samotop_mailbox_deliveries_total",
        "Copies delivered into mailboxes, by result (stored, deferred: 4xx "
        "such as 452 over quota, refused: 5xx) and code",
        "result,code");
    mm.commits = metrics_counter(m, "samotop_mailbox_group_commits_total",
                                 "Group commits (one fsync round for the "
                                 "messages that came together)",
                                 NULL);
    mm.batch = metrics_histogram(
        m, "samotop_mailbox_group_commit_messages", "Messages per group commit",
        NULL, batch_bounds,
        (int)(sizeof(batch_bounds) / sizeof(batch_bounds[0])));
    mm.commit_time = metrics_histogram(
        m, "samotop_mailbox_group_commit_seconds",
        "Time to write and fsync one group commit", NULL, NULL, 0);
}

void
mailbox_metrics_rcpts(const struct maildir_rcpt *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char code[16];

        snprintf(code, sizeof(code), "%d", r[i].code);
        metrics_inc(mm.deliveries, METRICS_L(r[i].code < 300   ? "stored"
                                             : r[i].code < 500 ? "deferred"
                                                               : "refused",
                                             code));
    }
}

void
mailbox_metrics_commit(int n, int64_t us)
{
    metrics_inc(mm.commits, NULL);
    metrics_observe(mm.batch, NULL, n);
    metrics_observe(mm.commit_time, NULL, (double)us / 1e6);
}
