/*
 * smtp_server.h - the ESMTP server engine: bytes in, replies and events out.
 *
 * The engine does no I/O and knows nothing of the bus. Its owner (the
 * listener actor, or any program that embeds libsamotop) feeds it the bytes
 * read from the client, takes events from it, answers the events that need a
 * decision, and sends the bytes it queues. One engine is one SMTP session;
 * it is not thread-safe. A typical loop:
 *
 *     n = smtp_server_input(srv, data, len);    (keep data+n.. for later)
 *     while ((ev = smtp_server_next(srv))->type != SMTP_EV_NONE)
 *         handle ev; for a decision, now or later: smtp_server_reply(...)
 *     out = smtp_server_output(srv, &olen); send; smtp_server_output_done()
 *
 * Events that need a decision (CONNECT, MAIL, RCPT, MESSAGE, AUTH) stop the
 * engine until smtp_server_reply() answers them; while one is pending,
 * smtp_server_next() returns SMTP_EV_NONE and smtp_server_input() takes
 * bytes only until its buffer is full (back-pressure: stop reading the
 * socket when it takes fewer than offered). The others are news: handle
 * them and call smtp_server_next() again.
 *
 * Replies are written by the engine, one or more complete CRLF-terminated
 * lines, in command order (RFC 2920 pipelining), with RFC 3463 enhanced
 * status codes (RFC 2034) on every 2xx/4xx/5xx reply except the greeting
 * and the EHLO/HELO answer. The engine answers protocol errors itself and
 * hands on only well-formed requests.
 *
 * Memory is bounded by the options: about max_message plus a few command
 * lines (AUTH lines: SMTP_AUTH_LINE_MAX) plus SMTP_OUTPUT_MAX of queued
 * replies, whatever the client sends (in LMTP mode, plus the accepted
 * recipients' addresses and replies: max_rcpts of each).
 *
 * LMTP (RFC 2033), with opts.lmtp: the same engine and events, but the
 * client says LHLO (HELO and EHLO get 500 5.5.1, 4.1), PIPELINING and
 * ENHANCEDSTATUSCODES are always offered (4.1), and the end of the data
 * (DATA's or BDAT LAST's) gets one reply per accepted RCPT, in RCPT order
 * (4.2): SMTP_EV_MESSAGE lists the recipients, and the caller answers each
 * with smtp_server_reply_rcpt(), in any order; the replies go out once all
 * are given. smtp_server_reply() to it answers every recipient not yet
 * answered alike.
 */
#ifndef SAMOTOP_SMTP_SERVER_H
#define SAMOTOP_SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/smtp_addr.h"

typedef struct smtp_server smtp_server_t;

/* RFC 4954 4: an AUTH command line or SASL response of this many octets
 * (without CRLF) must be accepted. */
#define SMTP_AUTH_LINE_MAX 12288

/* While this much output is queued, the engine takes no new command: a
 * client that pipelines without reading replies stalls (RFC 2920 3.1). */
#define SMTP_OUTPUT_MAX 16384

/* Extensions the engine can offer in its EHLO reply (opts.ext). */
enum {
    SMTP_EXT_SIZE = 1 << 0,                /* RFC 1870 */
    SMTP_EXT_PIPELINING = 1 << 1,          /* RFC 2920 */
    SMTP_EXT_8BITMIME = 1 << 2,            /* RFC 6152 */
    SMTP_EXT_SMTPUTF8 = 1 << 3,            /* RFC 6531 */
    SMTP_EXT_ENHANCEDSTATUSCODES = 1 << 4, /* RFC 2034 */
    SMTP_EXT_CHUNKING = 1 << 5,            /* RFC 3030 (BDAT) */
    SMTP_EXT_DSN = 1 << 6,                 /* RFC 3461 */
    SMTP_EXT_STARTTLS = 1 << 7,            /* RFC 3207 */
    SMTP_EXT_AUTH = 1 << 8,                /* RFC 4954 */
    SMTP_EXT_ALL = (1 << 9) - 1,
};

/* Zero in a numeric field means the default in brackets. */
struct smtp_server_opts {
    const char *hostname;   /* greeting, EHLO reply, 421s ["localhost"] */
    size_t max_line;        /* command line incl. CRLF [512]; 512 at least
                               (RFC 5321 4.5.3.1.4) */
    size_t max_text_line;   /* DATA text line incl. CRLF [1000]; 1000 at
                               least (4.5.3.1.6) */
    size_t max_message;     /* message octets, advertised as SIZE (RFC 1870)
                               [10485760] */
    int max_rcpts;          /* accepted recipients per transaction [100];
                               100 at least (4.5.3.1.8); beyond: 452 4.5.3 */
    int max_errors;         /* refusals before 421 4.7.0 and close [20]: bad
                               commands, and MAIL, RCPT or AUTH the caller
                               refused with a 5xx (dictionary attacks) */
    unsigned ext;           /* SMTP_EXT_* offered */
    const char *auth_mechs; /* offered when SMTP_EXT_AUTH, e.g. "PLAIN
                               LOGIN" [that]; the engine runs the 334
                               exchange of PLAIN and LOGIN itself, the
                               caller those of any other mechanism */
    bool tls_active;        /* already under TLS (implicit TLS, port 465) */
    bool auth_needs_tls;    /* AUTH offered only under TLS (RFC 4954 4) */
    bool mail_needs_auth;   /* MAIL before AUTH: 530 5.7.0 (MSA, RFC 6409) */
    bool lmtp;              /* speak LMTP (RFC 2033), see above */
};

enum smtp_event_type {
    SMTP_EV_NONE, /* more input, or a reply to the pending event */
    /* Decisions: answer each with smtp_server_reply(). */
    SMTP_EV_CONNECT, /* first: 220 greeting, or 554 or another 4xx/5xx
                        (then only QUIT is taken, RFC 5321 3.1), or 421
                        (then the engine closes); the engine puts the
                        hostname first in the greeting's text */
    SMTP_EV_MAIL,    /* MAIL FROM, well-formed: 250 2.1.0 or a refusal */
    SMTP_EV_RCPT,    /* RCPT TO, well-formed: 250 2.1.5 or a refusal */
    SMTP_EV_MESSAGE, /* the whole message (DATA's end or BDAT LAST): 250
                        2.0.0 ending with the trace id, or a refusal; in
                        LMTP mode one such answer per recipient.
                        Not given for one the engine refused itself:
                        over max_message (552 5.3.4, RFC 1870) or with a
                        DATA line over max_text_line (554 5.6.0) */
    SMTP_EV_AUTH,    /* AUTH with the client's response(s): 235 2.7.0,
                        535 5.7.8, 454 4.7.0, or 334 for another round
                        of a mechanism the engine does not run */
    /* News: no reply. */
    SMTP_EV_HELO,     /* EHLO, HELO or LHLO taken (the engine answered
                         250) */
    SMTP_EV_RESET,    /* the transaction the caller accepted with MAIL is
                         over (message answered or refused, RSET,
                         EHLO/HELO, a failed BDAT, QUIT, close): forget
                         its data. Exactly one per accepted MAIL. */
    SMTP_EV_STARTTLS, /* "220 2.0.0 Ready to start TLS" is queued and
                         every byte after the STARTTLS line discarded (RFC
                         3207 5, CVE-2011-0411): flush the output, drop
                         what was read but not fed, handshake, then call
                         smtp_server_tls_started(); bytes fed before that
                         are discarded */
    SMTP_EV_QUIT,     /* 221 queued: flush, then close */
    SMTP_EV_CLOSE,    /* the engine gives up (421 queued: too many errors,
                         an endless line, smtp_server_close(), a 421
                         reply): flush, then close */
};

/* MAIL's BODY parameter (RFC 6152). */
enum smtp_body { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

/* MAIL's RET parameter (RFC 3461 4.3). */
enum smtp_ret { SMTP_RET_NONE, SMTP_RET_FULL, SMTP_RET_HDRS };

/* RCPT's NOTIFY parameter (RFC 3461 4.1); 0 when absent. NEVER is alone. */
enum {
    SMTP_NOTIFY_NEVER = 1 << 0,
    SMTP_NOTIFY_SUCCESS = 1 << 1,
    SMTP_NOTIFY_FAILURE = 1 << 2,
    SMTP_NOTIFY_DELAY = 1 << 3,
};

struct smtp_event {
    enum smtp_event_type type;
    union {
        struct {
            const char *name; /* the EHLO/HELO argument, as given */
            bool esmtp;       /* EHLO */
        } helo;
        struct {
            const struct smtp_path *path; /* parsed reverse-path */
            const char *from; /* path->mailbox: normalised, "" for <> */
            const char *raw;  /* the path as given, without <> */
            bool size_given;
            size_t size;         /* SIZE= (RFC 1870), when size_given */
            enum smtp_body body; /* BODY= */
            bool smtputf8;       /* SMTPUTF8 (RFC 6531 3.4) */
            enum smtp_ret ret;   /* RET= (RFC 3461 4.3) */
            const char *envid;   /* ENVID= as xtext (RFC 3461 4.4), or NULL */
            const char *auth;    /* AUTH= as xtext (RFC 4954 5), or NULL */
        } mail;
        struct {
            const struct smtp_path *path; /* parsed forward-path */
            const char *to;    /* path->mailbox: normalised, source route
                                  dropped (RFC 5321 4.1.1.3); "postmaster"
                                  for <Postmaster> */
            const char *raw;   /* the path as given, without <> */
            unsigned notify;   /* SMTP_NOTIFY_* (RFC 3461 4.1), 0: none */
            const char *orcpt; /* ORCPT= "addr-type;xtext" as given (RFC
                                  3461 4.2), or NULL */
        } rcpt;
        struct {
            /* DATA: CRLF line ends, dot-stuffing undone (RFC 5321 4.5.2).
             * Only CRLF "." CRLF ends DATA: a bare LF or CR is a line end
             * of the text, stored as CRLF, never an end (no smuggling);
             * a dot starting a line after a real CRLF is dropped unless
             * CRLF follows it. BDAT: the chunks as sent (RFC 3030). */
            const char *data;
            size_t len;
            bool bdat; /* came by BDAT (RFC 3030) */
            /* LMTP mode: the recipients accepted (the rcpt.to of each
             * RCPT answered 2xx), in RCPT order; NULL and 0 otherwise. */
            const char *const *rcpts;
            int nrcpts;
        } message;
        struct {
            const char *mech; /* upper case, e.g. "PLAIN" */
            /* The client's responses, base64 as received ("" for an empty
             * one; syntax already checked): PLAIN has one, LOGIN two (user
             * name, password), another mechanism the one just received. */
            const char *resp[2];
            int nresp;
            /* LOGIN only: resp[] decoded; NULL otherwise. */
            const char *username, *password;
            int round; /* 0, then 1.. after each 334 the caller
                          asked for */
        } auth;
    };
};

/* A new session in its start state; the first event will be
 * SMTP_EV_CONNECT. o is copied (its strings too). */
smtp_server_t *smtp_server_new(const struct smtp_server_opts *o);

/* Frees the engine and NULLs *srv_p; NULL is fine. */
void smtp_server_destroy(smtp_server_t **srv_p);

/*
 * Copies up to len bytes of client input and returns how many it took:
 * fewer than len while its buffer is full waiting for a decision or for
 * the output to drain (back-pressure: stop reading, feed the rest later).
 * After SMTP_EV_STARTTLS (until smtp_server_tls_started()), SMTP_EV_QUIT
 * and SMTP_EV_CLOSE it takes everything and discards it.
 */
size_t smtp_server_input(smtp_server_t *srv, const void *data, size_t len);

/*
 * Runs the protocol on the input taken so far and returns the next event,
 * type SMTP_EV_NONE when it needs more input, a reply to the pending
 * decision, or room in the output. The event and all it points to are
 * borrowed: a decision's until it is answered (smtp_server_input() may be
 * called meanwhile), news until the next smtp_server_next().
 */
const struct smtp_event *smtp_server_next(smtp_server_t *srv);

/*
 * Whether smtp_server_reply() may answer the pending decision with code:
 * 200..599, and 3xx only as 334 to AUTH. A code that comes from another
 * process (a bus reply) is input: check it with this and answer 451 4.3.0
 * instead of passing on one the engine would abort on. False with
 * nothing pending.
 */
bool smtp_server_reply_code_ok(const smtp_server_t *srv, int code);

/*
 * Answers the pending decision event: code (200..599), enhanced status
 * (e.g. "2.1.0"; NULL or one of the wrong class for the default of the
 * code) and text (NULL for a default; "\n" starts a new reply line; control
 * characters are replaced). The engine formats the reply. Calling it with
 * nothing pending, or with a code out of range, aborts: a caller bug.
 * A 421 answer to anything closes the session (RFC 5321 3.8).
 */
void smtp_server_reply(smtp_server_t *srv, int code, const char *ecode,
                       const char *text);

/*
 * LMTP mode: answers recipient i (0 .. message.nrcpts - 1) of the pending
 * SMTP_EV_MESSAGE, with code, ecode and text as smtp_server_reply() takes
 * them (RFC 2033 4.2). Once every recipient has its answer, the replies
 * are queued in RCPT order and the transaction ends; a 421 among them
 * then closes the session. Answering with no MESSAGE pending, outside
 * LMTP mode, an i out of range or one already answered aborts: a caller
 * bug.
 */
void smtp_server_reply_rcpt(smtp_server_t *srv, int i, int code,
                            const char *ecode, const char *text);

/* The bytes queued for the client (borrowed; *len 0 when none). */
const char *smtp_server_output(const smtp_server_t *srv, size_t *len);

/* Says that the first n bytes of the output were sent. */
void smtp_server_output_done(smtp_server_t *srv, size_t n);

/*
 * After SMTP_EV_STARTTLS and a good handshake: the session starts again
 * under TLS, with no EHLO name, transaction or authentication (RFC 3207
 * 4.2); the client must EHLO again. No greeting is sent. After
 * smtp_server_close() it does nothing; without SMTP_EV_STARTTLS it aborts.
 */
void smtp_server_tls_started(smtp_server_t *srv);

/*
 * Ends the session from the caller's side (idle timeout, shutting down):
 * queues "421 <ecode> <hostname> <text>" and gives SMTP_EV_CLOSE next. A
 * pending decision is dropped.
 */
void smtp_server_close(smtp_server_t *srv, const char *ecode, const char *text);

/*
 * For the messages to come, until called again (e.g. with each RCPT's
 * answer, once the recipients are known): head octets are kept free in
 * front of the message's first octet, for a header the caller puts there
 * without copying the message (smtp_server_message_take()), and when MAIL
 * gave no SIZE= the buffer is first sized for guess octets (0: it grows
 * from 4 KiB by doubling, each step a copy). Set before the data starts
 * (DATA, the first BDAT); message.data and message.len never include the
 * head room.
 */
void smtp_server_message_room(smtp_server_t *srv, size_t head, size_t guess);

/*
 * With SMTP_EV_MESSAGE pending: hands over the message's buffer, which the
 * caller then owns (free()): *len octets, the head room asked for
 * (uninitialised, for the caller to fill) then the message.data octets,
 * which stay valid with it. NULL and *len 0 when there is no buffer (an
 * empty message without head room). The decision is still to answer.
 */
char *smtp_server_message_take(smtp_server_t *srv, size_t *len);

/* The EHLO/HELO/LHLO name given, or NULL before one (and after
 * STARTTLS). */
const char *smtp_server_helo(const smtp_server_t *srv);

/* Messages the engine refused by itself in this session (they are never
 * given as SMTP_EV_MESSAGE), by reply code: 552 (over max_message, RFC
 * 1870) or 554 (a line over max_text_line); 0 for any other code. */
unsigned smtp_server_refused(const smtp_server_t *srv, int code);

/* Whether the session runs under TLS (opts.tls_active or STARTTLS). */
bool smtp_server_tls(const smtp_server_t *srv);

/* Whether an AUTH was answered with 235. */
bool smtp_server_authenticated(const smtp_server_t *srv);

/* Whether the session is over (QUIT or CLOSE given): send what is queued,
 * then close. */
bool smtp_server_done(const smtp_server_t *srv);

/*
 * The "with" keyword for a Received header of the current transaction:
 * SMTP (HELO, unless authenticated), ESMTP, ESMTPA, ESMTPS, ESMTPSA (RFC
 * 3848), or UTF8SMTP, UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA when MAIL carried
 * SMTPUTF8 (RFC 6531 3.7.3); in LMTP mode LMTP, LMTPA, LMTPS, LMTPSA
 * and UTF8LMTP... alike. Static string.
 */
const char *smtp_server_with(const smtp_server_t *srv);

#endif
