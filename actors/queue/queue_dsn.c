/*
 * queue_dsn.c - the RFC 3464 reports the queue sends back (queue_dsn.h).
 *
 * The layout follows what Postfix's bounce daemon writes, which every
 * mail client shows well: a notice for people, the machine-readable
 * report, then the original or its header.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/err.h"

#include "queue_dsn.h"

/* Longest reply text kept from another server in a report. */
#define DSN_TEXT_MAX 400
/* Longest address written into a report. */
#define DSN_ADDR_MAX 600

static const char *
action_name(enum queue_action a)
{
    switch (a) {
    case QUEUE_ACT_FAILED:
        return "failed";
    case QUEUE_ACT_DELAYED:
        return "delayed";
    case QUEUE_ACT_DELIVERED:
        return "delivered";
    case QUEUE_ACT_RELAYED:
        return "relayed";
    case QUEUE_ACT_NONE:
        break;
    }
    return "none";
}

/* Delivered and relayed recipients share a report; the others each
 * have their own. */
static int
action_class(enum queue_action a)
{
    return a == QUEUE_ACT_RELAYED ? QUEUE_ACT_DELIVERED : (int)a;
}

void
queue_dsn_date(int64_t t_ms, char out[64])
{
    time_t t = (time_t)(t_ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    /* By hand, not strftime(): day and month names must be English
     * whatever the locale. */
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                       "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                         "May", "Jun", "Jul", "Aug",
                                         "Sep", "Oct", "Nov", "Dec"};
    snprintf(out, 64, "%s, %d %s %d %02d:%02d:%02d +0000", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
             tm.tm_min, tm.tm_sec);
}

bool
queue_dsn_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] & 0x80)
            return true;
    return false;
}

static bool
is_ascii(const char *s)
{
    return s == NULL || !queue_dsn_8bit(s, strlen(s));
}

/* Appends s with every control character (CR and LF too) made a space,
 * non-ASCII octets made '?' unless utf8, cut at max bytes with "...". */
static void
add_clean(buf_t *b, const char *s, size_t max, bool utf8)
{
    size_t n = strlen(s), i;

    for (i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f)
            c = ' ';
        else if (c >= 0x80 && !utf8)
            c = '?';
        buf_addc(b, (char)c);
    }
    if (i < n)
        buf_adds(b, "...");
}

/* RFC 3461 section 4: xtext. */
static void
add_xtext(buf_t *b, const char *s, size_t max)
{
    for (size_t i = 0; s[i] && i < max; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= '!' && c <= '~' && c != '+' && c != '=')
            buf_addc(b, (char)c);
        else
            buf_printf(b, "+%02X", c);
    }
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes the xtext s into out; false when it is no clean xtext or the
 * result holds a control character (then the caller keeps s as it is). */
static bool
xtext_decode(const char *s, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; s[i]; i++) {
        int c = (unsigned char)s[i];

        if (c == '+') {
            int h = hexval(s[i + 1]), l = h < 0 ? -1 : hexval(s[i + 2]);

            if (l < 0)
                return false;
            c = h * 16 + l;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= outlen)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

/* The header of a message: up to and with the empty line's first CRLF
 * (or LF), or all of it when there is no body. */
static size_t
header_len(const char *m, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (m[i] != '\n')
            continue;
        if (m[i + 1] == '\n')
            return i + 1;
        if (m[i + 1] == '\r' && i + 2 < n && m[i + 2] == '\n')
            return i + 1;
    }
    return n;
}

static void
add_human(buf_t *b, const struct queue_dsn *d, enum queue_action act, bool utf8)
{
    char until[64];

    buf_printf(b, "This is the mail system at host %s.\r\n\r\n", d->hostname);
    switch (act) {
    case QUEUE_ACT_FAILED:
        buf_adds(b, "I'm sorry to have to inform you that your message "
                    "could not\r\nbe delivered to one or more recipients. "
                    "It's attached below.\r\n\r\n"
                    "For further assistance, please send mail to "
                    "postmaster.\r\n\r\n"
                    "If you do so, please include this problem report. You "
                    "can\r\ndelete your own text from the attached returned "
                    "message.\r\n");
        break;
    case QUEUE_ACT_DELAYED: {
        long hours = (long)((d->now_ms - d->arrival_ms) / 3600000);
        int64_t retry_until = d->rcpts[0].will_retry_until_ms;

        queue_dsn_date(retry_until, until);
        buf_adds(b, "####################################################"
                    "################\r\n"
                    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND "
                    "YOUR MESSAGE. #\r\n"
                    "####################################################"
                    "################\r\n\r\n");
        buf_printf(b,
                   "Your message could not be delivered for more than %ld "
                   "hour%s.\r\nIt will be retried until %s.\r\n",
                   hours, hours == 1 ? "" : "s", until);
        break;
    }
    case QUEUE_ACT_DELIVERED:
    case QUEUE_ACT_RELAYED:
    case QUEUE_ACT_NONE:
        buf_adds(b, "Your message was successfully delivered to the "
                    "destination(s)\r\nlisted below. If the message was "
                    "delivered to a mailbox you will\r\nreceive no further "
                    "notifications. Otherwise you may still receive\r\n"
                    "notifications of mail delivery errors from other "
                    "systems.\r\n");
        break;
    }
    buf_printf(b, "\r\n                   The mail system\r\n");
    for (size_t i = 0; i < d->nrcpts; i++) {
        const struct queue_dsn_rcpt *r = &d->rcpts[i];

        buf_adds(b, "\r\n<");
        add_clean(b, r->final_rcpt, DSN_ADDR_MAX, utf8);
        buf_adds(b, ">");
        if (r->rcpt && strcasecmp(r->rcpt, r->final_rcpt) != 0) {
            buf_adds(b, " (expanded from\r\n    <");
            add_clean(b, r->rcpt, DSN_ADDR_MAX, utf8);
            buf_adds(b, ">)");
        }
        buf_adds(b, ":");
        if (r->code > 0) {
            buf_adds(b, "\r\n    ");
            if (r->mx && *r->mx) {
                buf_adds(b, "host ");
                add_clean(b, r->mx, 300, false);
                buf_adds(b, " said: ");
            }
            buf_printf(b, "%d %s ", r->code, r->ecode ? r->ecode : "");
            add_clean(b, r->text ? r->text : "", DSN_TEXT_MAX, false);
        }
        if (act == QUEUE_ACT_FAILED && r->status &&
            strcmp(r->status, "4.4.7") == 0)
            buf_adds(b, "\r\n    (delivery time expired)");
        else if (r->code <= 0)
            buf_printf(b, " %s", action_name(r->action));
        buf_adds(b, "\r\n");
    }
}

/* The host of "host:port" or "[v6]:port" (a bare host stays whole). */
static void
add_mta(buf_t *b, const char *mx)
{
    const char *colon = strrchr(mx, ':');
    size_t n = strlen(mx);
    char host[300];

    if (mx[0] == '[') {
        const char *rb = strchr(mx, ']');

        n = rb ? (size_t)(rb - mx) + 1 : n;
    } else if (colon && strchr(mx, ':') == colon) {
        n = (size_t)(colon - mx);
    }
    if (n >= sizeof(host))
        n = sizeof(host) - 1;
    memcpy(host, mx, n);
    host[n] = '\0';
    buf_adds(b, "Remote-MTA: dns; ");
    add_clean(b, host, sizeof(host), false);
    buf_adds(b, "\r\n");
}

static void
add_status(buf_t *b, const struct queue_dsn *d, bool utf8)
{
    const char *atype = utf8 ? "utf-8" : "rfc822";
    char date[64], orcpt[DSN_ADDR_MAX + 1];

    buf_printf(b, "Reporting-MTA: dns; %s\r\n", d->hostname);
    buf_printf(b, "X-Samotop-Queue-ID: %s\r\n", d->queue_id);
    if (d->envid && *d->envid) {
        buf_adds(b, "Original-Envelope-Id: ");
        add_xtext(b, d->envid, 100);
        buf_adds(b, "\r\n");
    }
    queue_dsn_date(d->arrival_ms, date);
    buf_printf(b, "Arrival-Date: %s\r\n", date);
    for (size_t i = 0; i < d->nrcpts; i++) {
        const struct queue_dsn_rcpt *r = &d->rcpts[i];

        buf_printf(b, "\r\nFinal-Recipient: %s; ", atype);
        add_clean(b, r->final_rcpt, DSN_ADDR_MAX, utf8);
        buf_adds(b, "\r\n");
        if (r->orcpt && *r->orcpt) {
            const char *semi = strchr(r->orcpt, ';');

            buf_adds(b, "Original-Recipient: ");
            if (semi && xtext_decode(semi + 1, orcpt, sizeof(orcpt)) &&
                (utf8 || is_ascii(orcpt))) {
                buf_add(b, r->orcpt, (size_t)(semi - r->orcpt));
                buf_adds(b, ";");
                add_clean(b, orcpt, DSN_ADDR_MAX, utf8);
            } else {
                add_clean(b, r->orcpt, DSN_ADDR_MAX, false);
            }
            buf_adds(b, "\r\n");
        }
        buf_printf(b, "Action: %s\r\n", action_name(r->action));
        buf_adds(b, "Status: ");
        add_clean(b, r->status && *r->status ? r->status : "5.0.0", 16, false);
        buf_adds(b, "\r\n");
        if (r->mx && *r->mx)
            add_mta(b, r->mx);
        if (r->code > 0) {
            buf_printf(b, "Diagnostic-Code: smtp; %d %s ", r->code,
                       r->ecode ? r->ecode : "");
            add_clean(b, r->text ? r->text : "", DSN_TEXT_MAX, false);
            buf_adds(b, "\r\n");
        }
        if (r->last_attempt_ms > 0) {
            queue_dsn_date(r->last_attempt_ms, date);
            buf_printf(b, "Last-Attempt-Date: %s\r\n", date);
        }
        if (r->action == QUEUE_ACT_DELAYED && r->will_retry_until_ms > 0) {
            queue_dsn_date(r->will_retry_until_ms, date);
            buf_printf(b, "Will-Retry-Until: %s\r\n", date);
        }
    }
}

static const char *
subject(enum queue_action act)
{
    switch (act) {
    case QUEUE_ACT_FAILED:
        return "Undelivered Mail Returned to Sender";
    case QUEUE_ACT_DELAYED:
        return "Delayed Mail (still being retried)";
    default:
        return "Successful Mail Delivery Report";
    }
}

int
queue_dsn_build(const struct queue_dsn *d, buf_t *out)
{
    enum queue_action act;
    bool utf8 = !is_ascii(d->sender), full;
    const char *orig = d->message ? d->message : "";
    size_t orig_len = d->message ? d->message_len : 0;
    char date[64];

    if (d->nrcpts == 0)
        return ERR_INVAL;
    act = d->rcpts[0].action;
    for (size_t i = 0; i < d->nrcpts; i++) {
        if (action_class(d->rcpts[i].action) != action_class(act))
            return ERR_INVAL;
        utf8 |=
            !is_ascii(d->rcpts[i].final_rcpt) || !is_ascii(d->rcpts[i].rcpt);
    }
    if (act == QUEUE_ACT_FAILED && d->ret && strcmp(d->ret, "FULL") == 0)
        full = true;
    else if (act == QUEUE_ACT_FAILED && d->ret && strcmp(d->ret, "HDRS") == 0)
        full = false;
    else
        full = act == QUEUE_ACT_FAILED && orig_len <= d->full_max;
    if (!full)
        orig_len = header_len(orig, orig_len);

    queue_dsn_date(d->now_ms, date);
    buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
               d->hostname);
    buf_adds(out, "To: <");
    add_clean(out, d->sender, DSN_ADDR_MAX, true);
    buf_adds(out, ">\r\n");
    buf_printf(out, "Subject: %s\r\n", subject(act));
    buf_printf(out, "Date: %s\r\n", date);
    buf_printf(out, "Message-ID: <%s@%s>\r\n", d->boundary, d->hostname);
    buf_adds(out, "Auto-Submitted: auto-replied\r\n");
    buf_adds(out, "MIME-Version: 1.0\r\n");
    buf_printf(out,
               "Content-Type: multipart/report; report-type=%s;\r\n"
               "\tboundary=\"%s\"\r\n",
               utf8 ? "global-delivery-status" : "delivery-status",
               d->boundary);
    buf_adds(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    buf_printf(out, "--%s\r\n", d->boundary);
    buf_adds(out, "Content-Description: Notification\r\n");
    buf_printf(out, "Content-Type: text/plain; charset=%s\r\n",
               utf8 ? "utf-8" : "us-ascii");
    if (utf8)
        buf_adds(out, "Content-Transfer-Encoding: 8bit\r\n");
    buf_adds(out, "\r\n");
    add_human(out, d, act, utf8);

    buf_printf(out, "\r\n--%s\r\n", d->boundary);
    buf_adds(out, "Content-Description: Delivery report\r\n");
    buf_printf(out, "Content-Type: message/%sdelivery-status\r\n",
               utf8 ? "global-" : "");
    if (utf8)
        buf_adds(out, "Content-Transfer-Encoding: 8bit\r\n");
    buf_adds(out, "\r\n");
    add_status(out, d, utf8);

    buf_printf(out, "\r\n--%s\r\n", d->boundary);
    if (full) {
        buf_adds(out, "Content-Description: Undelivered Message\r\n");
        buf_printf(out, "Content-Type: message/%s\r\n",
                   utf8 ? "global" : "rfc822");
    } else {
        buf_printf(out, "Content-Description: %s\r\n",
                   act == QUEUE_ACT_FAILED ? "Undelivered Message Headers"
                                           : "Message Headers");
        buf_printf(out, "Content-Type: text/%srfc822-headers\r\n",
                   utf8 ? "global-" : "");
    }
    if (queue_dsn_8bit(orig, orig_len))
        buf_adds(out, "Content-Transfer-Encoding: 8bit\r\n");
    buf_adds(out, "\r\n");
    buf_add(out, orig, orig_len);
    if (orig_len > 0 && orig[orig_len - 1] != '\n')
        buf_adds(out, "\r\n");
    buf_printf(out, "\r\n--%s--\r\n", d->boundary);
    return 0;
}
