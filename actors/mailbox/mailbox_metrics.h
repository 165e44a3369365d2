/*
 * mailbox_metrics.h - what samotop-mailbox counts for /metrics
 * (lib/metrics.h): each copy's delivery result by code, and the group
 * commits with their size and time. The handles are the process's own;
 * everything is called on the loop thread.
 */
#ifndef SAMOTOP_MAILBOX_METRICS_H
#define SAMOTOP_MAILBOX_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "lib/metrics.h"
#include "maildir.h"

/* Registers the mailbox's metrics in m (from init). */
void mailbox_metrics_init(metrics_t *m);

/* Counts the outcome of each of the n copies in r. */
void mailbox_metrics_rcpts(const struct maildir_rcpt *r, size_t n);

/* Counts one group commit of n messages that took us microseconds. */
void mailbox_metrics_commit(int n, int64_t us);

#endif
