/*
 * queue_dsn.h - delivery status notifications (RFC 3464) as the queue
 * sends them back to a message's sender.
 *
 * A DSN is a multipart/report; report-type=delivery-status message with
 * three parts: a human-readable notice, a message/delivery-status part
 * (one per-message block, then one block per recipient) and the original
 * message (message/rfc822) or only its header (text/rfc822-headers). It
 * comes From: MAILER-DAEMON@hostname, carries Auto-Submitted: auto-replied
 * (RFC 3834) and is sent with the null reverse-path, so that it never
 * bounces back. Every line ends with CRLF and none is longer than 998
 * octets; text from other servers is cleaned of control characters
 * before it goes into a header field.
 *
 * The original comes back whole for RET=FULL, as its header for RET=HDRS,
 * and, when the sender did not say, whole up to full_max bytes and as its
 * header above that. A report that is not about failures (delayed,
 * delivered, relayed) returns only the header, whatever RET says.
 *
 * Pure: no I/O, no clock; the caller passes the times.
 */
#ifndef SAMOTOP_QUEUE_DSN_H
#define SAMOTOP_QUEUE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

/* What a DSN reports about a recipient (RFC 3464 Action). */
enum queue_action {
    QUEUE_ACT_NONE,
    QUEUE_ACT_FAILED,
    QUEUE_ACT_DELAYED,
    QUEUE_ACT_DELIVERED,
    QUEUE_ACT_RELAYED,
};

/* One recipient of the report. */
struct queue_dsn_rcpt {
    const char *final_rcpt; /* the address delivered to, or that failed */
    const char *orcpt;      /* RFC 3461 ORCPT "addr-type;xtext", or NULL */
    const char *rcpt;       /* the forward-path the client gave, or NULL */
    enum queue_action action;
    const char *status; /* RFC 3463 code, e.g. "5.1.1" */
    int code;           /* the last reply: code, ecode, text; 0: none */
    const char *ecode;
    const char *text;
    const char *mx;              /* host[:port] that answered, or NULL */
    int64_t last_attempt_ms;     /* 0: none */
    int64_t will_retry_until_ms; /* delayed only */
};

/* What the report is about. Every pointer is borrowed. */
struct queue_dsn {
    const char *hostname; /* Reporting-MTA and MAILER-DAEMON's domain */
    const char *queue_id; /* the original's */
    const char *envid;    /* RFC 3461 ENVID (decoded), or NULL */
    const char *sender;   /* the original's reverse-path: To: */
    const char *ret;      /* "FULL", "HDRS" or NULL */
    size_t full_max;
    int64_t arrival_ms, now_ms;
    const char *message; /* the original, CRLF line ends */
    size_t message_len;
    const struct queue_dsn_rcpt *rcpts;
    size_t nrcpts;
    const char *boundary; /* unique: e.g. from the DSN's own queue id */
};

/* Writes the report into out (appended). Returns 0, or ERR_INVAL when
 * there is no recipient or the recipients' actions differ (delivered and
 * relayed may share a report). */
int queue_dsn_build(const struct queue_dsn *d, buf_t *out);

/* Whether the report holds 8-bit octets (then it needs 8BITMIME). */
bool queue_dsn_8bit(const char *p, size_t n);

/* The RFC 5322 date of t_ms (UTC) into out. */
void queue_dsn_date(int64_t t_ms, char out[64]);

#endif
