/*
 * smtp_client.h - the ESMTP client engine: server replies in, commands,
 * message data and events out.
 *
 * The engine does no I/O and knows nothing of the bus. Its owner (the
 * relay actor, or any program that embeds libsamotop) connects, feeds the
 * engine the bytes read from the server, sends the bytes it queues and
 * takes its events. One engine is one SMTP session, which may carry
 * several mail transactions one after the other (connection reuse); it is
 * not thread-safe. A typical loop:
 *
 *     n = smtp_client_input(cl, data, len);    (keep data+n.. for later)
 *     while ((ev = smtp_client_next(cl))->type != SMTP_CLIENT_EV_NONE)
 *         handle ev; on READY: smtp_client_begin(cl, &txn) or quit
 *     out = smtp_client_output(cl, &olen); send; smtp_client_output_done()
 *
 * The session runs by itself: greeting, EHLO (HELO when EHLO is refused,
 * RFC 5321 3.2), STARTTLS by the TLS policy (RFC 3207; EHLO again after
 * the handshake), then one transaction at a time: RSET before every
 * transaction but the first (it proves a reused session is alive), MAIL
 * FROM with SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC
 * 6531), RET and ENVID (RFC 3461) as the server offers them, RCPT TO per
 * recipient (NOTIFY and ORCPT when DSN is offered), then DATA with
 * dot-stuffing, or BDAT when CHUNKING is offered and opts.chunking asks
 * for it (RFC 3030). With PIPELINING (RFC 2920) the RSET, MAIL, every RCPT
 * and DATA go in one group and the replies are matched in order.
 *
 * Before sending anything the engine refuses, per recipient and without
 * a word to the server: a message over the server's SIZE (552 5.3.4), an
 * 8-bit message to a server without 8BITMIME (554 5.6.3), one that needs
 * SMTPUTF8 to a server without it (553 5.6.7, RFC 6531 3.2) and an address
 * that is not one (553 5.1.3; a bad sender: 553 5.1.7).
 *
 * Timeouts are the caller's: smtp_client_phase() says what the engine
 * waits for, and smtp_client_phase_timeout_ms() gives RFC 5321 4.5.3.2's
 * minimum for it. When the socket fails or a timer fires the caller says
 * so with smtp_client_fail().
 *
 * Memory is bounded whatever the server sends: a reply line over
 * opts.max_line octets or a reply of more than opts.max_lines lines ends
 * the session with an error, the input buffer is SMTP_CLIENT_INPUT_MAX,
 * and message data is queued SMTP_CLIENT_CHUNK octets at a time from the
 * caller's copy of the message.
 */
#ifndef SAMOTOP_SMTP_CLIENT_H
#define SAMOTOP_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/smtp_server.h"

typedef struct smtp_client smtp_client_t;

/* Input taken but not yet parsed, at most. */
#define SMTP_CLIENT_INPUT_MAX 16384

/* Message data queued for output at once, at most (plus dot-stuffing). */
#define SMTP_CLIENT_CHUNK 65536

/* STARTTLS policy (RFC 3207; RFC 7435 for the opportunistic kind). */
enum smtp_client_tls {
    SMTP_CLIENT_TLS_NONE, /* never: plain text */
    SMTP_CLIENT_TLS_MAY,  /* when offered; on without it when refused */
    SMTP_CLIENT_TLS_MUST, /* fail (451 4.7.4) unless TLS is started */
};

/* Zero in a numeric field means the default in brackets. */
struct smtp_client_opts {
    const char *helo; /* our name for EHLO/HELO ["localhost"] */
    size_t max_line;  /* reply line incl. CRLF [512]; 512 at least
                         (RFC 5321 4.5.3.1.5) */
    int max_lines;    /* lines of one reply [100] */
    enum smtp_client_tls tls;
    bool tls_active;    /* already under TLS (implicit TLS, port 465) */
    bool no_pipelining; /* one command at a time even when offered */
    bool chunking;      /* BDAT instead of DATA when CHUNKING is offered */
};

/* What the engine waits for, to choose a timeout by (RFC 5321 4.5.3.2). */
enum smtp_client_phase {
    SMTP_PHASE_GREETING,   /* the 220 (initial, 5 min) */
    SMTP_PHASE_EHLO,       /* EHLO or HELO reply (5 min) */
    SMTP_PHASE_STARTTLS,   /* STARTTLS reply (5 min) */
    SMTP_PHASE_TLS,        /* the caller's TLS handshake */
    SMTP_PHASE_IDLE,       /* nothing: between transactions */
    SMTP_PHASE_RSET,       /* RSET reply (5 min) */
    SMTP_PHASE_MAIL,       /* MAIL reply (5 min) */
    SMTP_PHASE_RCPT,       /* RCPT reply (5 min) */
    SMTP_PHASE_DATA_INIT,  /* DATA's 354 (2 min) */
    SMTP_PHASE_DATA_BLOCK, /* message data being sent (3 min per block) */
    SMTP_PHASE_DATA_END,   /* the reply to the end of data (10 min) */
    SMTP_PHASE_QUIT,       /* QUIT reply */
    SMTP_PHASE_DONE,       /* the session is over */
};

/* A reply, the server's or one the engine made up (local). */
struct smtp_reply {
    int code;         /* 200..599 */
    char ecode[16];   /* RFC 3463 "x.y.z", or "" when the reply had none */
    const char *text; /* the lines' texts without code and enhanced code,
                         joined with "\n"; never NULL */
    bool local;       /* made by the engine, not sent by the server */
};

/* One recipient of a transaction. */
struct smtp_client_rcpt {
    const char *addr;  /* the mailbox, without <> */
    unsigned notify;   /* SMTP_NOTIFY_* (RFC 3461 4.1), 0 for none */
    const char *orcpt; /* RFC 3461 4.2 "addr-type;xtext", or a bare
                          address (sent as rfc822;xtext), or NULL */
};

/* One mail transaction. The engine copies everything but data. */
struct smtp_client_txn {
    const char *mail_from; /* the reverse-path without <>; "" for <> */
    const struct smtp_client_rcpt *rcpts;
    int nrcpts;       /* 1 at least */
    const char *data; /* the message, CRLF line ends: borrowed until
                         SMTP_CLIENT_EV_DONE (or the engine's end) */
    size_t len;
    bool eight_bit;    /* the message holds octets over 127 */
    bool smtputf8;     /* the message or an address needs SMTPUTF8
                          (also found by the engine in addresses) */
    enum smtp_ret ret; /* RFC 3461 RET, sent when DSN is offered */
    const char *envid; /* RFC 3461 ENVID (xtext or plain), or NULL */
};

enum smtp_client_event_type {
    SMTP_CLIENT_EV_NONE,     /* more input, or room in the output */
    SMTP_CLIENT_EV_GREETING, /* the server's 220 (ev->reply) */
    SMTP_CLIENT_EV_EHLO,     /* EHLO (or HELO) answered: the capabilities
                                are known (smtp_client_ext()) */
    SMTP_CLIENT_EV_STARTTLS, /* the server's 220 to STARTTLS: nothing is
                                queued; drop what was read but not fed,
                                handshake (SNI: the server's name), then
                                smtp_client_tls_started(), or on failure
                                smtp_client_fail() */
    SMTP_CLIENT_EV_READY,    /* idle: smtp_client_begin() or
                                smtp_client_quit() */
    SMTP_CLIENT_EV_RCPT,     /* a reply to RCPT ev->rcpt (ev->reply) */
    SMTP_CLIENT_EV_DONE,     /* the transaction is over:
                                smtp_client_result() per recipient */
    SMTP_CLIENT_EV_QUIT,     /* QUIT answered: close */
    SMTP_CLIENT_EV_CLOSE,    /* the session failed (ev->reply says why: a
                                421, an error reply to the greeting, EHLO
                                and HELO, or STARTTLS under TLS_MUST, a
                                malformed or oversized reply, a reply
                                nobody asked for, smtp_client_fail()):
                                send what is queued (maybe a QUIT), close */
};

struct smtp_client_event {
    enum smtp_client_event_type type;
    const struct smtp_reply *reply; /* borrowed until the next call of
                                       smtp_client_next() */
    int rcpt;                       /* SMTP_CLIENT_EV_RCPT: its index */
};

/* A new session waiting for the greeting; o is copied (its strings
 * too). */
smtp_client_t *smtp_client_new(const struct smtp_client_opts *o);

/* Frees the engine and NULLs *cl_p; NULL is fine. */
void smtp_client_destroy(smtp_client_t **cl_p);

/*
 * Copies up to len bytes of server input and returns how many it took:
 * fewer than len while its buffer is full (feed the rest after the events
 * have been taken). After SMTP_CLIENT_EV_STARTTLS (until
 * smtp_client_tls_started()), QUIT and CLOSE it takes all and drops it.
 */
size_t smtp_client_input(smtp_client_t *cl, const void *data, size_t len);

/*
 * Parses the input taken so far and returns the next event, type NONE
 * when it needs more input. The event is borrowed until the next call.
 */
const struct smtp_client_event *smtp_client_next(smtp_client_t *cl);

/* The bytes queued for the server (borrowed; *len 0 when none). */
const char *smtp_client_output(const smtp_client_t *cl, size_t *len);

/* Says that the first n bytes of the output were sent; message data
 * is queued again as the output drains. */
void smtp_client_output_done(smtp_client_t *cl, size_t n);

/*
 * Starts a transaction, now if the session is idle, else as soon as it
 * is (after the greeting, EHLO and STARTTLS). Returns 0, or ERR_INVAL
 * when t has no recipient or a transaction is already in hand, or
 * ERR_CLOSED when the session is over or quitting. Every recipient gets a
 * result by SMTP_CLIENT_EV_DONE, or by the CLOSE that ends the session.
 */
int smtp_client_begin(smtp_client_t *cl, const struct smtp_client_txn *t);

/* The final reply for recipient i of the last transaction: its RCPT
 * reply when refused there, else the reply to the end of data (or to
 * MAIL, DATA or BDAT when those failed, or a local one). Borrowed until
 * the next smtp_client_begin(); NULL for a bad index or before DONE. */
const struct smtp_reply *smtp_client_result(const smtp_client_t *cl, int i);

/* Ends the session politely: QUIT once the transaction in hand is over
 * (at once when idle); SMTP_CLIENT_EV_QUIT follows its reply. */
void smtp_client_quit(smtp_client_t *cl);

/* After SMTP_CLIENT_EV_STARTTLS and a good handshake: EHLO is sent again
 * (RFC 3207 4.2). Without the event it does nothing. */
void smtp_client_tls_started(smtp_client_t *cl);

/*
 * The caller gives up on the session (connection lost, timeout, failed
 * handshake): every recipient of the transaction in hand still without a
 * final reply gets a local one with code (4xx or 5xx), ecode and text,
 * then SMTP_CLIENT_EV_DONE and SMTP_CLIENT_EV_CLOSE follow. Nothing is
 * queued for the server. After the end of the session it does nothing.
 */
void smtp_client_fail(smtp_client_t *cl, int code, const char *ecode,
                      const char *text);

/* What the engine waits for now. */
enum smtp_client_phase smtp_client_phase(const smtp_client_t *cl);

/* "greeting", "ehlo", ... for logs. Static string. */
const char *smtp_client_phase_name(enum smtp_client_phase p);

/* RFC 5321 4.5.3.2's timeout for a phase, in milliseconds (the greeting,
 * EHLO, STARTTLS, RSET, MAIL and RCPT 5 minutes, DATA's 354 2 minutes, a
 * data block 3 minutes, the end of data 10 minutes, QUIT 5 minutes); 0
 * for IDLE and DONE. */
long smtp_client_phase_timeout_ms(enum smtp_client_phase p);

/* The extensions the server offered (SMTP_EXT_* of smtp_server.h), known
 * after SMTP_CLIENT_EV_EHLO; 0 after HELO. */
unsigned smtp_client_ext(const smtp_client_t *cl);

/* The server's SIZE limit (RFC 1870), 0 when it gave none. */
size_t smtp_client_size_max(const smtp_client_t *cl);

/* Whether the session runs under TLS (opts.tls_active or STARTTLS). */
bool smtp_client_tls(const smtp_client_t *cl);

/* Whether the session is idle and can take a transaction now. */
bool smtp_client_idle(const smtp_client_t *cl);

/* Whether the session is over (QUIT or CLOSE given). */
bool smtp_client_done(const smtp_client_t *cl);

/* Transactions finished on this session so far. */
int smtp_client_transactions(const smtp_client_t *cl);

#endif
