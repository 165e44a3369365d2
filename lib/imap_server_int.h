/*
 * imap_server_int.h - the inside of the IMAP server engine, shared by its
 * files and by nothing else (not installed).
 *
 * imap_server.c holds the session: input, the command reader (lines,
 * literals, limits), the dispatcher, AUTHENTICATE and IDLE, and the public
 * interface of the session. imap_server_resp.c holds the responses: the
 * tagged completions, the untagged responses and their timing (held or
 * sent), the FETCH builder and the value formatting. Both run on one
 * struct imap_server.
 */
#ifndef SAMOTOP_IMAP_SERVER_INT_H
#define SAMOTOP_IMAP_SERVER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/imap_parse.h"
#include "lib/imap_server.h"

#define NEWS_MAX 4

/* Where the session stands (RFC 3501 3). */
enum imap_sess {
    S_CONNECT,  /* the greeting is still to be decided */
    S_NOTAUTH,  /* not authenticated */
    S_AUTH,     /* authenticated */
    S_SELECTED, /* a mailbox selected */
    S_TLS,      /* after STARTTLS, until imap_server_tls_started() */
    S_DONE,     /* LOGOUT, BYE or close: nothing more */
};

/* What the reader is doing with the input. */
enum imap_rd {
    RD_LINE,         /* reading a line up to LF */
    RD_DROP_LINE,    /* dropping a line over max_line up to its LF */
    RD_LITERAL,      /* copying a literal's octets into the command */
    RD_DROP_LITERAL, /* dropping a refused LITERAL+ literal's octets */
};

/* What a line read means. */
enum imap_mode {
    M_CMD,  /* a command, or the next line of one after a literal */
    M_SASL, /* AUTHENTICATE's response (RFC 3501 6.2.2) */
    M_IDLE, /* "DONE" (RFC 2177 3) */
};

struct imap_server {
    /* Options, defaults filled in; the strings are ours. */
    char *hostname;
    size_t max_line, max_literal, max_command, max_append;
    int max_errors;
    bool starttls, login_needs_tls;

    enum imap_sess st;
    bool tls, read_only;
    int errors;

    /* Events. */
    enum imap_event_type pending; /* the decision awaited, or NONE */
    bool dec_ready;               /* dec not yet handed out */
    struct imap_event dec;
    struct imap_event news_ev;
    enum imap_event_type news[NEWS_MAX];
    int nnews;

    /* Input not yet read: in[in_off..in_len). */
    char *in;
    size_t in_off, in_len, in_cap;
    enum imap_rd rd;
    enum imap_mode mode;

    /* The command being read: its lines (CRLF-ended) and literals. */
    buf_t cmd;
    size_t cmd_size;   /* counted against max_command */
    bool first_done;   /* its first line was read */
    bool is_append;    /* it is an APPEND */
    bool msg_taken;    /* APPEND's message literal was announced */
    uint64_t lit_left; /* RD_LITERAL and RD_DROP_LITERAL */
    char *tag;         /* its tag, for a refusal; NULL if none */
    /* Refused while being read: the rest is dropped, then this goes out. */
    bool refused;
    enum imap_status ref_st;
    const char *ref_code, *ref_why;
    /* RD_DROP_LINE: octets dropped, and the last ones kept to see whether
     * the line announced a literal. */
    size_t dropped;
    char tail[32];
    size_t tail_len;

    /* The command in progress: a decision, the SASL exchange, IDLE. */
    imap_parse_t *parse;
    const struct imap_cmd *cur;
    char *idle_tag;
    bool idling;
    char *user, *pass, *authzid; /* AUTHENTICATE PLAIN, wiped after */

    /* Output: out[out_off..len) is still to be sent. An offset rather
     * than buf_consume(), so that sending a large FETCH answer in socket
     * sized pieces does not move the rest each time. */
    buf_t out;
    size_t out_off;
    buf_t held;         /* unsolicited responses held back */
    bool held_expunge;  /* held has an EXPUNGE */
    buf_t fetch;        /* a FETCH response being built to be held */
    buf_t *fb;          /* where the FETCH response goes: out, or fetch */
    size_t fetch_start; /* where it starts in *fb */
    bool in_fetch, fetch_first;
};

/* imap_server.c */

/* Queues a news event (no answer wanted). */
void imap_server_news(imap_server_t *srv, enum imap_event_type type);
/* The session ends here: "* BYE [code] text", then IMAP_EV_CLOSE. */
void imap_server_shut(imap_server_t *srv, const char *code, const char *text);
/* A BAD (or refused login) counted towards max_errors. */
void imap_server_count_error(imap_server_t *srv);
/* Whether the command may not have an EXPUNGE sent during it (RFC 3501
 * 7.4.1): FETCH, STORE and SEARCH without UID. */
bool imap_server_no_expunge(const struct imap_cmd *cmd);

/* imap_server_resp.c */

/* "* CAPABILITY" list as the session stands, without the "* ". */
void imap_resp_capabilities(const imap_server_t *srv, buf_t *b);
/* Queues "tag st [code] text" (tag NULL: "*"), after the held responses
 * when they may go now; text NULL for none (then "Completed"). */
void imap_resp_tagged(imap_server_t *srv, const char *tag, enum imap_status st,
                      const char *code, const char *text);
/* Queues "* st [code] text" at once (greeting, BYE). */
void imap_resp_status_now(imap_server_t *srv, enum imap_status st,
                          const char *code, const char *text);
/* Sends what is held when it may go during the command in progress. */
void imap_resp_flush_held(imap_server_t *srv);
/* Queues an untagged response, or holds it (see imap_server.h). */
void imap_resp_emit(imap_server_t *srv, const char *data, size_t n,
                    bool expunge);
/* Whether an untagged response other than EXPUNGE written now would go
 * out at once. */
bool imap_resp_now(const imap_server_t *srv);

#endif
