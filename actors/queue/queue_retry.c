/*
 * queue_retry.c - when to try a deferred recipient again.
 *
 * Exponential backoff as Postfix's qmgr does it (minimal_backoff_time
 * doubling up to maximal_backoff_time), with jitter so that the messages
 * a down server deferred together do not all come back at one instant.
 */
#include "queue.h"

int64_t
queue_retry_delay_ms(int attempts, long min_s, long max_s, uint32_t rnd)
{
    int64_t max_ms = (int64_t)max_s * 1000, d = (int64_t)min_s * 1000;

    for (int i = 1; i < attempts && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    /* 0.9 d .. 1.1 d: doubling steps stay strictly apart. */
    d = d * 9 / 10 + (int64_t)((double)d / 5 * ((double)rnd / 4294967296.0));
    if (d > max_ms)
        d = max_ms;
    return d > 0 ? d : 1;
}
