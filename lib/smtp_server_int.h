/*
 * smtp_server_int.h - the inside of the ESMTP server engine, shared by its
 * three files and by nothing else (not installed).
 *
 * smtp_server.c holds the session: input, the command reader and
 * dispatcher, the replies, the public interface and the commands that need
 * no more than that. smtp_mail.c holds the mail transaction (MAIL, RCPT,
 * DATA, BDAT and the message buffer), smtp_auth.c the SASL exchange of
 * AUTH. All run on one struct smtp_server.
 */
#ifndef SAMOTOP_SMTP_SERVER_INT_H
#define SAMOTOP_SMTP_SERVER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/smtp_addr.h"
#include "lib/smtp_server.h"

#define NEWS_MAX 4
#define MECH_MAX 20        /* RFC 4422 3.1: SASL names are 1..20 chars */
#define REPLY_LINE_MAX 512 /* RFC 5321 4.5.3.1.5, with CRLF */
/* Where the input and line buffers start and what they shrink back to;
 * the output buffer's capacity kept once all was sent (smtp_server.c). */
#define IN_START 1024
#define LINE_START 512
#define OUT_KEEP 1024

enum smtp_state {
    ST_CONNECT, /* the greeting is still to be decided */
    ST_REFUSED, /* 554 greeting: only QUIT (RFC 5321 3.1) */
    ST_CMD,     /* reading command lines */
    ST_AUTH,    /* reading a SASL response line (RFC 4954 4) */
    ST_DATA,    /* reading DATA text */
    ST_BDAT,    /* reading a BDAT chunk's octets */
    ST_TLS,     /* after STARTTLS, until smtp_server_tls_started() */
    ST_DONE,    /* QUIT or close: nothing more */
};

/* Where DATA's scanner stands (see smtp_mail_data_feed()). */
enum smtp_dstate {
    D_BOL,   /* at the start of a line that followed a real CRLF */
    D_TEXT,  /* inside a line, or after a bare LF or CR */
    D_CR,    /* a CR seen: a CRLF or a bare CR? */
    D_DOT,   /* "." at D_BOL */
    D_DOTCR, /* ".\r" at D_BOL: one LF more ends the data */
};

enum smtp_mech { MECH_PLAIN, MECH_LOGIN, MECH_OTHER };

/* One LMTP recipient's answer to the message, until all are in. */
struct lmtp_answer {
    int code; /* 0: not answered yet */
    char ecode[12];
    char *text;
};

struct smtp_server {
    /* Options, defaults filled in; the strings are ours. */
    char *hostname, *auth_mechs;
    size_t max_line, max_text_line, max_message;
    int max_rcpts, max_errors;
    unsigned ext;
    bool auth_needs_tls, mail_needs_auth, lmtp;

    enum smtp_state st;
    enum smtp_event_type pending; /* the decision awaited, or NONE */
    bool dec_ready;               /* dec not yet handed out */
    struct smtp_event dec;        /* the decision event */
    struct smtp_event news_ev;
    enum smtp_event_type news[NEWS_MAX];
    int nnews;

    /* Input not yet parsed: in[in_off..in_len). The buffer starts small
     * and grows up to in_max, the limit smtp_server_input() keeps. */
    char *in;
    size_t in_off, in_len, in_cap, in_max;
    bool skipping;  /* inside a line over its limit, dropping it */
    size_t skipped; /* its length so far */

    buf_t out;

    /* Session. */
    char *helo;
    bool esmtp, tls, authed;
    int errors;
    /* Messages refused here, never handed out: 552 (over max_message),
     * 554 (a line over max_text_line), for smtp_server_refused(). */
    unsigned refused_552, refused_554;

    /* Transaction: MAIL accepted (RFC 5321 4.1.4). */
    bool trans, trans_utf8, bdat_used;
    int nrcpts;
    /* LMTP: the accepted recipients (rcpt[0..nrcpts)), and once the
     * message is handed out, each one's answer (RFC 2033 4.2). */
    char **rcpt;
    int rcpt_cap;
    struct lmtp_answer *ans;
    int nanswered;

    /* The command line being handled; the decision's strings point in.
     * It grows for a long line (an AUTH line: up to line_max). */
    char *line;
    size_t line_cap, line_max;
    struct smtp_path path;

    /* The message being received. */
    char *msg;
    size_t msg_len, msg_cap;
    size_t msg_hint; /* the SIZE= of the transaction's MAIL, or 0 */
    size_t msg_head; /* octets left free in front of this message */
    size_t head_want, guess; /* smtp_server_message_room() */
    bool over, too_long;
    enum smtp_dstate dstate;
    size_t text_line; /* octets of the current DATA line so far */
    uint64_t bdat_left, bdat_size;
    bool bdat_last;
    int bdat_code; /* the refusal the chunk gets once read, or 0 */
    const char *bdat_ecode, *bdat_text;

    /* SASL exchange. */
    enum smtp_mech mech;
    char mech_name[MECH_MAX + 1];
    char *resp[2], *user, *pass;
    int nresp, round;
};

/* smtp_server.c */

/* Queues one reply; text may hold "\n" for more lines; ecode NULL for
 * none (greeting, EHLO, 334, 354). */
void smtp_server_put_reply(smtp_server_t *srv, int code, const char *ecode,
                           const char *text);
void smtp_server_replyf(smtp_server_t *srv, int code, const char *ecode,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A reply refusing a bad command: counted towards max_errors. */
void smtp_server_refuse(smtp_server_t *srv, int code, const char *ecode,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void smtp_server_count_error(smtp_server_t *srv);
/* Queues a news event (no reply wanted). */
void smtp_server_news(smtp_server_t *srv, enum smtp_event_type type);
/* Makes srv->dec, filled in by the caller, the pending decision. */
void smtp_server_decide(smtp_server_t *srv, enum smtp_event_type type);
/* Ends the transaction, with SMTP_EV_RESET when the caller had one. */
void smtp_server_reset_txn(smtp_server_t *srv);
/* Whether an extension was offered to this client (EHLO given). */
bool smtp_server_offered(const smtp_server_t *srv, unsigned ext);
/* Whether AUTH may be offered now (TLS policy). */
bool smtp_server_auth_offered(const smtp_server_t *srv);
/* Drops n parsed bytes of input. */
void smtp_server_consume(smtp_server_t *srv, size_t n);
/* Queues a reply to the end of the data: once, or in LMTP mode once per
 * accepted recipient (RFC 2033 4.2). */
void smtp_server_data_reply(smtp_server_t *srv, int code, const char *ecode,
                            const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* smtp_mail.c */

void smtp_mail_from(smtp_server_t *srv, char *arg);
void smtp_mail_rcpt(smtp_server_t *srv, char *arg);
void smtp_mail_data(smtp_server_t *srv, char *arg);
void smtp_mail_bdat(smtp_server_t *srv, char *arg);
/* Reads DATA text from the input; true once the data has ended (and the
 * message was refused or handed out as a decision). */
bool smtp_mail_data_feed(smtp_server_t *srv);
/* Reads BDAT octets from the input; false when it needs more input. */
bool smtp_mail_bdat_feed(smtp_server_t *srv);
/* Forgets the message (the buffer too, when it grew large). */
void smtp_mail_clear(smtp_server_t *srv);

/* smtp_auth.c */

void smtp_auth_cmd(smtp_server_t *srv, char *arg);
/* One response line of the SASL exchange. */
void smtp_auth_response(smtp_server_t *srv, const char *resp);
/* The caller's answer to SMTP_EV_AUTH: true when it was 334 (another
 * round, already queued), false when the reply is still to be sent. */
bool smtp_auth_answer(smtp_server_t *srv, int code, const char *text);
void smtp_auth_clear(smtp_server_t *srv);

#endif
