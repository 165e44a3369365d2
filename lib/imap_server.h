/*
 * imap_server.h - the IMAP4rev1 server engine (RFC 3501): bytes in,
 * responses and events out.
 *
 * The engine does no I/O and knows nothing of the store or the bus. Its
 * owner (the mailbox actor, or any program that embeds libsamotop) feeds it
 * the bytes read from the client, takes events from it, answers those that
 * need a decision, and sends the bytes it queues. One engine is one IMAP
 * session; it is not thread-safe. A typical loop, as in smtp_server.h:
 *
 *     n = imap_server_input(srv, data, len);    (keep data+n.. for later)
 *     while ((ev = imap_server_next(srv))->type != IMAP_EV_NONE)
 *         handle ev; for a decision, now or later: untagged responses
 *         (imap_server_exists(), imap_server_fetch_*() ...), then
 *         imap_server_complete(srv, IMAP_OK, code, text)
 *     out = imap_server_output(srv, &olen); send; imap_server_output_done()
 *
 * The engine reads commands whole: it asks for synchronizing literals
 * ("+ Ready for literal data"), takes LITERAL+ ones (RFC 7888), checks
 * every size limit, parses the command (lib/imap_parse.h) and checks that
 * it is valid in the session's state. It answers itself CAPABILITY, NOOP
 * (outside the selected state), LOGOUT, STARTTLS, syntax errors and
 * commands in the wrong state (tagged BAD with a reason, or untagged BAD
 * when no tag could be read; the session goes on), AUTHENTICATE's SASL
 * exchange, a SEARCH CHARSET it does not know, and refuses LOGIN and
 * AUTHENTICATE while LOGINDISABLED. Every other command becomes a decision
 * event carrying the parsed command, answered with any untagged responses
 * and then one imap_server_complete(). While a decision is pending,
 * imap_server_next() returns IMAP_EV_NONE and imap_server_input() takes
 * bytes only until its buffer is full (back-pressure: stop reading the
 * socket when it takes fewer than offered). News events need no answer.
 *
 * Untagged responses. Those written while a decision is pending are part
 * of that command's response and are queued at once, in order, except an
 * EXPUNGE while a FETCH, STORE or SEARCH (not their UID forms) is pending
 * (RFC 3501 7.4.1), which is held. Those written with no decision pending
 * are unsolicited: during IDLE they are queued at once (RFC 2177); else
 * they are queued at once too (RFC 3501 5.3), unless they are an EXPUNGE,
 * which may not be sent while no command is in progress, or come after a
 * held one. Held responses go out, in order, as soon as the next command
 * starts (before its decision is handed out), unless it is a FETCH, STORE
 * or SEARCH; a later one takes them then. A client's sequence numbers
 * mean what it was told, so a caller that numbers messages applies an
 * expunge to its numbering when the response goes out:
 * imap_server_expunge_ok() says whether one written now does; a caller
 * that keeps expunges it learns of while that is false and writes them at
 * the next decision or in IDLE never has one held.
 *
 * Memory is bounded by the options: about max_command plus max_append
 * plus IMAP_HELD_MAX, plus what the caller writes in answer to a decision
 * (pace large FETCH answers by imap_server_output()'s length).
 */
#ifndef SAMOTOP_IMAP_SERVER_H
#define SAMOTOP_IMAP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/imap_parse.h"

typedef struct imap_server imap_server_t;

/* While this much output is queued, the engine starts no new command: a
 * client that pipelines without reading responses stalls. */
#define IMAP_OUTPUT_MAX 65536

/* Unsolicited responses held (see above) past this many octets end the
 * session with "* BYE": the client will resynchronise when it returns. */
#define IMAP_HELD_MAX (1024 * 1024)

/* Zero in a numeric field means the default in brackets. */
struct imap_server_opts {
    const char *hostname; /* greeting and BYE texts ["localhost"] */
    size_t max_line;      /* one line of a command, between literals,
                             with CRLF [8192]; 1024 at least */
    size_t max_literal;   /* a literal other than APPEND's message
                             [8192]; 1024 at least */
    size_t max_command;   /* a whole command, lines and literals, without
                             APPEND's message [65536]; max_line and
                             max_literal at least */
    size_t max_append;    /* APPEND's message [10485760]; beyond: NO
                             [TOOBIG] */
    int max_errors;       /* BAD responses and refused logins before
                             "* BYE" and close [20] */
    bool starttls;        /* STARTTLS offered (the caller can do TLS) */
    bool tls_active;      /* already under TLS (IMAPS, port 993) */
    bool login_needs_tls; /* before TLS: LOGINDISABLED, no AUTH=PLAIN,
                             LOGIN and AUTHENTICATE refused (RFC 3501
                             6.2.3, 11.1) */
};

enum imap_event_type {
    IMAP_EV_NONE, /* more input, or an answer to the pending decision */
    /* Decisions: answer each with imap_server_complete(). */
    IMAP_EV_CONNECT, /* first: IMAP_OK (the greeting "* OK [CAPABILITY
                        ...]"), IMAP_PREAUTH (already authenticated) or
                        IMAP_BYE (refused; the engine closes) */
    IMAP_EV_LOGIN,   /* LOGIN, or AUTHENTICATE PLAIN after its exchange:
                        check ev->login and answer IMAP_OK or IMAP_NO (a
                        NO counts towards max_errors) */
    IMAP_EV_COMMAND, /* any other command: ev->cmd */
    /* News: no answer. */
    IMAP_EV_IDLE_DONE, /* IDLE ended (DONE, or another line: tagged BAD);
                          its tagged response is queued */
    IMAP_EV_STARTTLS,  /* "tag OK Begin TLS negotiation now" is queued and
                          every byte after the STARTTLS line discarded:
                          flush the output, drop what was read but not fed,
                          handshake, then imap_server_tls_started() */
    IMAP_EV_LOGOUT,    /* "* BYE" and the tagged OK queued: flush, close */
    IMAP_EV_CLOSE,     /* the engine gives up ("* BYE" queued: too many
                          errors, an endless line, held responses over
                          IMAP_HELD_MAX, imap_server_close(), a BYE
                          answer): flush, then close */
};

/*
 * What each command's decision expects (RFC 3501 6 and the extensions),
 * the caller writing the untagged responses named, then completing:
 *
 *   SELECT EXAMINE  FLAGS, EXISTS, RECENT, OK [UNSEEN n], OK
 *                   [PERMANENTFLAGS (...)], OK [UIDVALIDITY n], OK
 *                   [UIDNEXT n]; OK (code NULL: [READ-WRITE] for SELECT,
 *                   [READ-ONLY] for EXAMINE) selects the mailbox, read-only
 *                   when EXAMINE or the code is READ-ONLY; anything else
 *                   leaves none selected (6.3.1)
 *   LIST LSUB       imap_server_list() each
 *   STATUS          imap_server_status()
 *   APPEND          OK [APPENDUID uidvalidity uid] (RFC 4315)
 *   SEARCH          imap_server_search()
 *   FETCH           imap_server_fetch_begin() ... _end() each message
 *   STORE           FETCH (FLAGS) unless silent
 *   COPY            OK [COPYUID uidvalidity uids uids]
 *   MOVE            * OK [COPYUID ...], then EXPUNGE each (RFC 6851)
 *   EXPUNGE         EXPUNGE each
 *   CLOSE           none; OK returns to the authenticated state
 *   UNSELECT        as CLOSE, the caller expunging nothing (RFC 3691)
 *   IDLE            OK sends "+ idling" and starts IDLE: the engine ends it
 *                   on "DONE" with "tag OK IDLE terminated" and
 *                   IMAP_EV_IDLE_DONE; NO or BAD refuse it
 *   NOOP CHECK      (selected) pending updates, then OK
 *   NAMESPACE       imap_server_namespace()
 *   ID              imap_server_id()
 *   ENABLE          imap_server_enabled() with those it enables (none of
 *                   the extensions offered here is ENABLE-able)
 *   others          none
 */
struct imap_event {
    enum imap_event_type type;
    /* LOGIN and COMMAND: the parsed command, its tag and arguments. */
    const struct imap_cmd *cmd;
    struct {
        const char *mech;    /* "PLAIN", or NULL for the LOGIN command */
        const char *authzid; /* PLAIN's authorization identity, "" when
                                none was given */
        const char *user, *pass;
    } login; /* LOGIN */
};

/* A completion's status (RFC 3501 7.1). */
enum imap_status {
    IMAP_OK,
    IMAP_NO,
    IMAP_BAD,
    IMAP_BYE,     /* "* BYE", and the session closes */
    IMAP_PREAUTH, /* the greeting only */
};

enum imap_state {
    IMAP_STATE_NOT_AUTH, /* also before the greeting */
    IMAP_STATE_AUTH,
    IMAP_STATE_SELECTED,
    IMAP_STATE_LOGOUT, /* LOGOUT, a BYE or a close: nothing more */
};

/* A new session; the first event will be IMAP_EV_CONNECT. o is copied
 * (its strings too). */
imap_server_t *imap_server_new(const struct imap_server_opts *o);

/* Frees the engine and NULLs *srv_p; NULL is fine. */
void imap_server_destroy(imap_server_t **srv_p);

/*
 * Copies up to len bytes of client input and returns how many it took:
 * fewer than len while its buffer is full waiting for a decision or for
 * the output to drain (back-pressure: stop reading, feed the rest later).
 * After IMAP_EV_STARTTLS (until imap_server_tls_started()), IMAP_EV_LOGOUT
 * and IMAP_EV_CLOSE it takes everything and discards it.
 */
size_t imap_server_input(imap_server_t *srv, const void *data, size_t len);

/*
 * Runs the protocol on the input taken so far and returns the next event,
 * type IMAP_EV_NONE when it needs more input, an answer to the pending
 * decision, or room in the output. The event and all it points to are
 * borrowed: a decision's until it is answered (imap_server_input() may be
 * called meanwhile), news until the next imap_server_next().
 */
const struct imap_event *imap_server_next(imap_server_t *srv);

/*
 * Answers the pending decision: the engine writes "tag OK [code] text"
 * (for CONNECT "* OK ...", "* PREAUTH ..." or "* BYE ..."). code is a
 * response code without brackets ("UIDNEXT 4", "TRYCREATE") or NULL for
 * the default (CAPABILITY after a greeting and a login, READ-WRITE or
 * READ-ONLY after SELECT and EXAMINE, AUTHENTICATIONFAILED after a refused
 * login); text NULL for a default. Control characters, and "]" in a code,
 * are replaced. IMAP_BYE writes "* BYE text" instead and closes. Calling it
 * with nothing pending, inside a FETCH response, or with a status the
 * decision cannot take (PREAUTH but for CONNECT, NO or BAD for it)
 * aborts: a caller bug.
 */
void imap_server_complete(imap_server_t *srv, enum imap_status st,
                          const char *code, const char *text);

/* The bytes queued for the client (borrowed; *len 0 when none). */
const char *imap_server_output(const imap_server_t *srv, size_t *len);

/* Says that the first n bytes of the output were sent. */
void imap_server_output_done(imap_server_t *srv, size_t n);

/*
 * After IMAP_EV_STARTTLS and a good handshake: reading starts again under
 * TLS; no greeting is sent, the client asks for CAPABILITY again (RFC 3501
 * 6.2.1). After imap_server_close() it does nothing; without
 * IMAP_EV_STARTTLS it aborts.
 */
void imap_server_tls_started(imap_server_t *srv);

/*
 * Ends the session from the caller's side (autologout timer, shutting
 * down): queues "* BYE text" and gives IMAP_EV_CLOSE next. A pending
 * decision and held responses are dropped, and a FETCH response being
 * built is taken back as far as it was not sent (the caller may still
 * finish it: it goes nowhere).
 */
void imap_server_close(imap_server_t *srv, const char *text);

/*
 * Appends to out the input the engine took but has not read yet (what a
 * client pipelined after the command being answered) and forgets it. For
 * a caller that hands the rest of the session to another server, as the
 * mailbox does with a login for an account another copy owns: called
 * while that login's decision is pending, before completing it.
 */
void imap_server_take_input(imap_server_t *srv, buf_t *out);

enum imap_state imap_server_state(const imap_server_t *srv);

/* Whether the selected mailbox was opened read-only (EXAMINE, or a
 * SELECT answered [READ-ONLY]). */
bool imap_server_read_only(const imap_server_t *srv);

/* Whether the session runs under TLS (opts.tls_active or STARTTLS). */
bool imap_server_tls(const imap_server_t *srv);

/* Whether IDLE is running. */
bool imap_server_idling(const imap_server_t *srv);

/* Whether an EXPUNGE written now goes out at once (see the top). */
bool imap_server_expunge_ok(const imap_server_t *srv);

/* Whether the session is over (LOGOUT or CLOSE given): send what is
 * queued, then close. */
bool imap_server_done(const imap_server_t *srv);

/*
 * Untagged responses (RFC 3501 7), formatted by the engine; see the top
 * for when each goes out. Strings are quoted or sent as literals as they
 * need; a flag list is a space-separated string of flags ("\Seen $Junk"),
 * and anything in it that is no flag is left out. None of these may be
 * called inside a FETCH response (between _fetch_begin and _fetch_end).
 */

/* "* n EXISTS", "* n RECENT", "* n EXPUNGE" (7.3.1, 7.3.2, 7.4.1). */
void imap_server_exists(imap_server_t *srv, uint32_t n);
void imap_server_recent(imap_server_t *srv, uint32_t n);
void imap_server_expunge(imap_server_t *srv, uint32_t seq);

/* "* FLAGS (flags)" (7.2.6). */
void imap_server_flags(imap_server_t *srv, const char *flags);

/* "* OK [code] text", NO, BAD or BYE (not PREAUTH) without closing: e.g.
 * IMAP_OK, "UIDVALIDITY 3857529045", "UIDs valid" (7.1). */
void imap_server_untagged_status(imap_server_t *srv, enum imap_status st,
                                 const char *code, const char *text);

/* "* LIST (attrs) "/" name" or LSUB (7.2.2, 7.2.3): attrs a
 * space-separated list ("\Noselect \HasChildren"), delim '\0' for NIL. */
void imap_server_list(imap_server_t *srv, bool lsub, const char *attrs,
                      char delim, const char *name);

/* The values a STATUS response can carry. */
struct imap_status_values {
    uint32_t messages, recent, uidnext, uidvalidity, unseen;
};

/* "* STATUS name (MESSAGES n ...)" with the items (IMAP_STATUS_*) asked
 * for, in RFC 3501 order (7.2.4). */
void imap_server_status(imap_server_t *srv, const char *mailbox, unsigned items,
                        const struct imap_status_values *v);

/* "* SEARCH n n ..." (7.2.5); n 0 for none found. */
void imap_server_search(imap_server_t *srv, const uint32_t *nums, size_t n);

/* "* CAPABILITY ..." as the session stands (7.2.1): IMAP4rev1 LITERAL+
 * IDLE UIDPLUS MOVE NAMESPACE ID ENABLE UNSELECT, and before authentication
 * STARTTLS (when offered, before TLS), LOGINDISABLED (login_needs_tls,
 * before TLS) or AUTH=PLAIN SASL-IR. The engine answers the CAPABILITY
 * command itself. */
void imap_server_capability(imap_server_t *srv);

/* "* NAMESPACE (("prefix" "delim")) NIL NIL" (RFC 2342 5): one personal
 * namespace, no others. */
void imap_server_namespace(imap_server_t *srv, const char *prefix, char delim);

/* "* ID (field value ...)" or "* ID NIL" (RFC 2971 3.2): params are field,
 * value pairs (n strings, even); a NULL value is NIL. */
void imap_server_id(imap_server_t *srv, const char *const *params, size_t n);

/* "* ENABLED cap ..." (RFC 5161 3.2); n may be 0. */
void imap_server_enabled(imap_server_t *srv, const char *const *caps, size_t n);

/* "* text" as given, for responses this interface lacks: control
 * characters are replaced, so it cannot carry a literal. */
void imap_server_untagged(imap_server_t *srv, const char *text);

/*
 * One FETCH response (7.4.2): begin, any items in any order, end. No other
 * response can fall inside it: the untagged helpers abort meanwhile and
 * imap_server_next() gives IMAP_EV_NONE. A response that goes out at once
 * is built in the output (a body is copied once), one to be held apart.
 * seq is the message's sequence number; uid and flags as elsewhere.
 */
void imap_server_fetch_begin(imap_server_t *srv, uint32_t seq);
void imap_server_fetch_uid(imap_server_t *srv, uint32_t uid);
void imap_server_fetch_flags(imap_server_t *srv, const char *flags);
/* INTERNALDATE "17-Jul-1996 02:44:25 -0700": t in its zone, minutes east
 * of UTC. */
void imap_server_fetch_internaldate(imap_server_t *srv, time_t t, int zone);
void imap_server_fetch_size(imap_server_t *srv, uint64_t size);
/* An item whose value the caller formatted, e.g. "ENVELOPE" with the text
 * lib/imap_mime.h makes; it must be well-formed IMAP. */
void imap_server_fetch_item(imap_server_t *srv, const char *name,
                            const char *value, size_t len);
/*
 * The data att asks for: named as RFC 3501 7.4.2 wants (RFC822,
 * RFC822.HEADER, RFC822.TEXT, or BODY[section] and "<offset>" when
 * partial; never BODY.PEEK) and sent as a literal. data is the whole
 * section: the engine cuts out the partial range itself. data NULL sends
 * NIL.
 */
void imap_server_fetch_section(imap_server_t *srv,
                               const struct imap_fetch_att *att,
                               const void *data, size_t len);
void imap_server_fetch_end(imap_server_t *srv);

/*
 * Helpers to format IMAP values into b, for lib/imap_mime.c and callers:
 * a string as a quoted string when it can be one, else a literal; NULL as
 * NIL (nstring); an astring as an atom when it can be one.
 */
void imap_server_put_string(buf_t *b, const char *s, size_t len);
void imap_server_put_nstring(buf_t *b, const char *s);
void imap_server_put_astring(buf_t *b, const char *s);

#endif
