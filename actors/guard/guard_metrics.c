/*
 * guard_metrics.c - what samotop-guard counts for /metrics
 * (lib/metrics.h): every decision by check (connect, mail, rcpt), SMTP
 * code and enhanced code, so that an operator sees why mail is refused
 * (5.1.1 unknown user, 4.7.1 rate limit, ...) without reading logs.
 */
#include <stdio.h>
#include <string.h>

#include "guard.h"
#include "lib/metrics.h"

static metric_t *decisions;

void
guard_metrics_init(metrics_t *m)
{
    decisions = metrics_counter(
        m, "samotop_guard_decisions_total",
        "Guard decisions by check (connect, mail, rcpt), reply code and "
        "enhanced status code",
        "check,code,ecode");
}

void
guard_metrics_decision(const envelope_t *req, const envelope_t *reply)
{
    const char *type = envelope_type(req), *dot = strchr(type, '.');
    const char *ecode = envelope_get_str(reply, ENV_KEY_ECODE);
    char code[16];

    snprintf(code, sizeof(code), "%d", envelope_code(reply));
    metrics_inc(decisions,
                METRICS_L(dot ? dot + 1 : type, code, ecode ? ecode : ""));
}
