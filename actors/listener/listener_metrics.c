/*
 * listener_metrics.c - what samotop-listener counts for /metrics
 * (lib/metrics.h): sessions by role, the answers it gives to the steps
 * decided over the bus (greeting, MAIL, RCPT, the message, AUTH) by SMTP
 * code, and the bytes its clients send.
 *
 * The handles live here, one set per process (like listener_main.c's
 * listener), so listener_session.c only calls one function per event.
 * Messages the SMTP engine refuses by itself (552 over SIZE, 554 a line
 * too long) are added when their session ends; its other replies (syntax
 * errors, 452 too many recipients) are not counted.
 */
#include <stdio.h>

#include "listener.h"
#include "lib/metrics.h"

static struct {
    metric_t *open, *sessions, *messages, *rejected, *bytes;
} lm;

void
listener_metrics_init(metrics_t *m)
{
    lm.open = metrics_gauge(m, "samotop_smtp_sessions_open",
                            "SMTP sessions open now, by role", "role");
    lm.sessions = metrics_counter(m, "samotop_smtp_sessions_total",
                                  "SMTP sessions accepted, by role", "role");
    lm.messages = metrics_counter(
        m, "samotop_smtp_messages_total",
        "Messages answered at the end of DATA or BDAT LAST, by role and "
        "reply code (250: accepted)",
        "role,code");
    lm.rejected = metrics_counter(
        m, "samotop_smtp_rejected_total",
        "4xx and 5xx answers to the greeting, MAIL, RCPT, the message and "
        "AUTH, by role, command and code",
        "role,command,code");
    lm.bytes = metrics_counter(m, "samotop_smtp_received_bytes_total",
                               "Bytes read from SMTP clients, by role", "role");
}

void
listener_metrics_session(const char *role, int delta)
{
    if (delta > 0) {
        metrics_inc(lm.sessions, METRICS_L(role));
        metrics_inc(lm.open, METRICS_L(role));
    } else {
        metrics_dec(lm.open, METRICS_L(role));
    }
}

void
listener_metrics_bytes(const char *role, size_t n)
{
    metrics_add(lm.bytes, METRICS_L(role), (double)n);
}

void
listener_metrics_engine(const char *role, const smtp_server_t *smtp)
{
    static const int codes[] = {552, 554};

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        unsigned n = smtp_server_refused(smtp, codes[i]);
        char c[16];

        if (n == 0)
            continue;
        snprintf(c, sizeof(c), "%d", codes[i]);
        metrics_add(lm.messages, METRICS_L(role, c), n);
        metrics_add(lm.rejected, METRICS_L(role, "data", c), n);
    }
}

void
listener_metrics_answer(const char *role, enum smtp_event_type what, int code)
{
    const char *cmd;
    char c[16];

    switch (what) {
    case SMTP_EV_CONNECT:
        cmd = "connect";
        break;
    case SMTP_EV_MAIL:
        cmd = "mail";
        break;
    case SMTP_EV_RCPT:
        cmd = "rcpt";
        break;
    case SMTP_EV_MESSAGE:
        cmd = "data";
        break;
    case SMTP_EV_AUTH:
        cmd = "auth";
        break;
    default:
        return;
    }
    snprintf(c, sizeof(c), "%d", code);
    if (what == SMTP_EV_MESSAGE)
        metrics_inc(lm.messages, METRICS_L(role, c));
    if (code >= 400)
        metrics_inc(lm.rejected, METRICS_L(role, cmd, c));
}
