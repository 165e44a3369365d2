/*
 * auth_metrics.c - what samotop-auth counts for /metrics (lib/metrics.h):
 * every verification by result (ok, fail, tempfail) and reason
 * (wrong_password, unknown_user, locked_ip, busy, ...: a fixed set from
 * auth_handlers.c), and whether the cache of verified logins answered.
 * Called on the loop thread only, never from the scrypt pool.
 */
#include "auth.h"
#include "lib/metrics.h"

static metric_t *verifications, *cache;

void
auth_metrics_init(metrics_t *m)
{
    verifications = metrics_counter(
        m, "samotop_auth_verifications_total",
        "Credential checks answered, by result (ok, fail, tempfail) and "
        "reason",
        "result,reason");
    cache =
        metrics_counter(m, "samotop_auth_cache_total",
                        "Verifications by cache use (hit, miss, off)", "cache");
}

void
auth_metrics_verify(int code, const char *reason, const char *cache_use)
{
    const char *result = code / 100 == 2   ? "ok"
                         : code / 100 == 4 ? "tempfail"
                                           : "fail";

    metrics_inc(verifications, METRICS_L(result, reason));
    metrics_inc(cache, METRICS_L(cache_use));
}
