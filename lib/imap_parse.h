/*
 * imap_parse.h - the IMAP4rev1 command grammar (RFC 3501 9), with the
 * extensions the server engine offers: LITERAL+ (RFC 7888), UIDPLUS's UID
 * EXPUNGE (RFC 4315), MOVE (RFC 6851), IDLE (RFC 2177), NAMESPACE (RFC
 * 2342), ID (RFC 2971), ENABLE (RFC 5161) and SASL-IR (RFC 4959).
 *
 * imap_parse_command() takes one whole command as the engine assembled it
 * (see lib/imap_server.h): the tag, the name, the arguments, each literal
 * as "{n}" or "{n+}", CRLF and its n octets, and the final CRLF. It fills a
 * struct imap_cmd whose strings and lists live in the parser and stay put
 * until the next imap_parse_command() or imap_parse_clear(). The parser
 * does no I/O, never reads past the length given and recurses at most
 * IMAP_DEPTH_MAX deep (SEARCH's parentheses, NOT and OR).
 *
 * Strings are handed over decoded (quoting undone, literals copied) and
 * NUL-terminated; a NUL inside one is refused, except in APPEND's message,
 * which is given as octets with a length and points into the command.
 * Mailbox names are checked for modified UTF-7 (RFC 3501 5.1.3) and given
 * as sent, except that INBOX in any case is given as "INBOX".
 */
#ifndef SAMOTOP_IMAP_PARSE_H
#define SAMOTOP_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct imap_parse imap_parse_t;

/* SEARCH's nesting of parentheses, NOT and OR. */
#define IMAP_DEPTH_MAX 64
/* Part numbers in a BODY[section] ("1.2.3" is three). */
#define IMAP_SECTION_MAX 16
/* RFC 2971 3.3: at most 30 pairs, field names of 30 octets, values of
 * 1024. */
#define IMAP_ID_PAIRS_MAX 30
#define IMAP_ID_FIELD_MAX 30
#define IMAP_ID_VALUE_MAX 1024

enum imap_cmd_id {
    IMAP_CMD_NONE, /* not read: the tag or the name was bad */
    /* Any state (RFC 3501 6.1). */
    IMAP_CMD_CAPABILITY,
    IMAP_CMD_NOOP,
    IMAP_CMD_LOGOUT,
    IMAP_CMD_ID, /* RFC 2971 */
    /* Not authenticated (6.2). */
    IMAP_CMD_STARTTLS,
    IMAP_CMD_AUTHENTICATE,
    IMAP_CMD_LOGIN,
    /* Authenticated (6.3). */
    IMAP_CMD_SELECT,
    IMAP_CMD_EXAMINE,
    IMAP_CMD_CREATE,
    IMAP_CMD_DELETE,
    IMAP_CMD_RENAME,
    IMAP_CMD_SUBSCRIBE,
    IMAP_CMD_UNSUBSCRIBE,
    IMAP_CMD_LIST,
    IMAP_CMD_LSUB,
    IMAP_CMD_STATUS,
    IMAP_CMD_APPEND,
    IMAP_CMD_IDLE,      /* RFC 2177 */
    IMAP_CMD_NAMESPACE, /* RFC 2342 */
    IMAP_CMD_ENABLE,    /* RFC 5161 */
    /* Selected (6.4); those marked take a UID prefix. */
    IMAP_CMD_CHECK,
    IMAP_CMD_CLOSE,
    IMAP_CMD_UNSELECT, /* RFC 3691 */
    IMAP_CMD_EXPUNGE, /* UID: RFC 4315 2.1 */
    IMAP_CMD_SEARCH,  /* UID */
    IMAP_CMD_FETCH,   /* UID */
    IMAP_CMD_STORE,   /* UID */
    IMAP_CMD_COPY,    /* UID */
    IMAP_CMD_MOVE,    /* UID; RFC 6851 */
    IMAP_CMD__COUNT
};

/* A list of strings: flags, header field names, capabilities, ID pairs. */
struct imap_strs {
    const char *const *v;
    size_t n;
};

/* "*" in a sequence set: the largest number in use (RFC 3501 9). */
#define IMAP_SEQ_STAR 0

/* One number or range of a sequence set, as sent: lo may be above hi
 * ("4:2" is "2:4"), either may be IMAP_SEQ_STAR; a single number has
 * lo == hi. */
struct imap_seq_range {
    uint32_t lo, hi;
};

struct imap_seqset {
    const struct imap_seq_range *r;
    size_t n; /* at least 1 */
};

/* A date as SEARCH gives it (RFC 3501 9, "date"). */
struct imap_date {
    int year, mon, day; /* mon 1..12 */
};

/* FETCH attributes (RFC 3501 6.4.5). */
enum imap_fetch_item {
    IMAP_FETCH_ENVELOPE,
    IMAP_FETCH_FLAGS,
    IMAP_FETCH_INTERNALDATE,
    IMAP_FETCH_RFC822,        /* BODY[] that sets \Seen, named RFC822 */
    IMAP_FETCH_RFC822_HEADER, /* BODY.PEEK[HEADER], named RFC822.HEADER */
    IMAP_FETCH_RFC822_SIZE,
    IMAP_FETCH_RFC822_TEXT, /* BODY[TEXT], named RFC822.TEXT */
    IMAP_FETCH_BODY,        /* BODYSTRUCTURE without extension data */
    IMAP_FETCH_BODYSTRUCTURE,
    IMAP_FETCH_UID,
    IMAP_FETCH_SECTION, /* BODY[section]<partial> or BODY.PEEK[...] */
};

/* What a section names within its part (RFC 3501 6.4.5). */
enum imap_section_spec {
    IMAP_SEC_WHOLE,      /* BODY[] or BODY[1.2]: the part itself */
    IMAP_SEC_HEADER,     /* HEADER */
    IMAP_SEC_FIELDS,     /* HEADER.FIELDS (list) */
    IMAP_SEC_FIELDS_NOT, /* HEADER.FIELDS.NOT (list) */
    IMAP_SEC_TEXT,       /* TEXT */
    IMAP_SEC_MIME,       /* MIME: the part's own header; parts given */
};

struct imap_section {
    uint32_t part[IMAP_SECTION_MAX]; /* "1.2" is {1, 2}; each nonzero */
    int nparts;
    enum imap_section_spec spec;
    struct imap_strs fields; /* FIELDS and FIELDS_NOT: upper-cased */
};

struct imap_fetch_att {
    enum imap_fetch_item item;
    bool peek;               /* BODY.PEEK: \Seen is not set */
    bool partial;            /* <offset.count> given */
    uint32_t offset;         /* partial only */
    uint32_t count;          /* partial only; nonzero */
    struct imap_section sec; /* SECTION only */
};

/* FETCH arguments. ALL, FAST and FULL are expanded (RFC 3501 6.4.5); UID
 * FETCH gets a UID attribute when it lacks one (6.4.8). */
struct imap_fetch_args {
    struct imap_seqset set;
    const struct imap_fetch_att *att;
    size_t natt;
    unsigned items; /* 1 << IMAP_FETCH_* for each kind asked */
    bool sets_seen; /* RFC822, RFC822.TEXT or a BODY[] that is no PEEK */
};

/* SEARCH keys (RFC 3501 6.4.4). */
enum imap_search_type {
    IMAP_SK_AND, /* "(" keys ")" and the program itself: every key in sub */
    IMAP_SK_SEQSET,
    IMAP_SK_ALL,
    IMAP_SK_ANSWERED,
    IMAP_SK_BCC,
    IMAP_SK_BEFORE,
    IMAP_SK_BODY,
    IMAP_SK_CC,
    IMAP_SK_DELETED,
    IMAP_SK_DRAFT,
    IMAP_SK_FLAGGED,
    IMAP_SK_FROM,
    IMAP_SK_HEADER,
    IMAP_SK_KEYWORD,
    IMAP_SK_LARGER,
    IMAP_SK_NEW,
    IMAP_SK_NOT,
    IMAP_SK_OLD,
    IMAP_SK_ON,
    IMAP_SK_OR,
    IMAP_SK_RECENT,
    IMAP_SK_SEEN,
    IMAP_SK_SENTBEFORE,
    IMAP_SK_SENTON,
    IMAP_SK_SENTSINCE,
    IMAP_SK_SINCE,
    IMAP_SK_SMALLER,
    IMAP_SK_SUBJECT,
    IMAP_SK_TEXT,
    IMAP_SK_TO,
    IMAP_SK_UID,
    IMAP_SK_UNANSWERED,
    IMAP_SK_UNDELETED,
    IMAP_SK_UNDRAFT,
    IMAP_SK_UNFLAGGED,
    IMAP_SK_UNKEYWORD,
    IMAP_SK_UNSEEN,
    IMAP_SK__COUNT
};

struct imap_search_key {
    enum imap_search_type type;
    const char *str;        /* BCC CC FROM SUBJECT TEXT TO BODY, HEADER's
                               value, KEYWORD's and UNKEYWORD's flag */
    const char *field;      /* HEADER's field name */
    uint32_t num;           /* LARGER, SMALLER */
    struct imap_date date;  /* BEFORE ON SINCE SENT* */
    struct imap_seqset set; /* SEQSET, UID */
    /* AND: its keys; NOT: the key; OR: the first key, whose next is the
     * second. */
    const struct imap_search_key *sub;
    const struct imap_search_key *next; /* the next key in the list */
};

struct imap_search_args {
    const char *charset;                /* CHARSET's name, or NULL */
    const struct imap_search_key *prog; /* an IMAP_SK_AND of the keys */
};

/* STORE (RFC 3501 6.4.6). */
enum imap_store_op {
    IMAP_STORE_SET,    /* FLAGS */
    IMAP_STORE_ADD,    /* +FLAGS */
    IMAP_STORE_REMOVE, /* -FLAGS */
};

/* STATUS items (RFC 3501 6.3.10), a bit each. */
enum {
    IMAP_STATUS_MESSAGES = 1 << 0,
    IMAP_STATUS_RECENT = 1 << 1,
    IMAP_STATUS_UIDNEXT = 1 << 2,
    IMAP_STATUS_UIDVALIDITY = 1 << 3,
    IMAP_STATUS_UNSEEN = 1 << 4,
};

/*
 * One parsed command. Flags (STORE, APPEND) are checked flag atoms with
 * the system flags in their RFC 3501 spelling ("\seen" becomes "\Seen");
 * \Recent is refused there (RFC 3501 9, "flag").
 */
struct imap_cmd {
    const char *tag;
    enum imap_cmd_id id;
    bool uid; /* the UID form (RFC 3501 6.4.8) */
    union {
        struct {
            const char *user, *pass;
        } login;
        struct {
            const char *mech; /* upper case */
            const char *ir;   /* RFC 4959 initial response, base64 as
                                 sent ("" for "="), or NULL */
        } authenticate;
        /* SELECT EXAMINE CREATE DELETE SUBSCRIBE UNSUBSCRIBE */
        const char *mailbox;
        struct {
            const char *from, *to;
        } rename;
        struct {
            const char *ref, *pattern; /* LIST and LSUB */
        } list;
        struct {
            const char *mailbox;
            unsigned items; /* IMAP_STATUS_* */
        } status;
        struct {
            const char *mailbox;
            struct imap_strs flags;
            bool has_date;
            time_t date;     /* date-time given, as UTC */
            int zone;        /* its zone, minutes east of UTC */
            const char *msg; /* the message octets (may hold NUL) */
            size_t len;
        } append;
        struct imap_search_args search;
        struct imap_fetch_args fetch;
        struct {
            struct imap_seqset set;
            enum imap_store_op op;
            bool silent;
            struct imap_strs flags;
        } store;
        struct {
            struct imap_seqset set;
            const char *mailbox;
        } copy; /* COPY and MOVE */
        struct {
            struct imap_seqset set; /* UID EXPUNGE only */
        } expunge;
        /* ID: field, value, field, value...; a value may be NULL (NIL).
         * n is 0 for "ID NIL". */
        struct imap_strs idparams;
        struct imap_strs enable; /* capability names, as sent */
    };
};

/* A new parser. */
imap_parse_t *imap_parse_new(void);

/* Frees the parser and all it handed out, and NULLs *p_p; NULL is fine. */
void imap_parse_destroy(imap_parse_t **p_p);

/*
 * Parses the whole command in buf[0..len) (see above; it ends in CRLF).
 * Returns 0 and points *cmd_p at the result, or a negative ERR_INVAL with
 * a static reason in *why_p ("Missing argument" and the like) and the tag
 * and the command's id in *cmd_p as far as they were read (tag NULL: no
 * usable tag). The result replaces the previous one.
 */
int imap_parse_command(imap_parse_t *p, const char *buf, size_t len,
                       const struct imap_cmd **cmd_p, const char **why_p);

/* Forgets the last result and frees what it used beyond a first block;
 * with wipe, zeroes its memory first (it held a password). */
void imap_parse_clear(imap_parse_t *p, bool wipe);

/* The length of the tag at the start of s[0..len) when one is there and is
 * followed by a space or the end (RFC 3501 9, "tag"), else 0. */
size_t imap_parse_tag(const char *s, size_t len);

/*
 * Whether the line s[0..len) (without CRLF) ends in a literal's
 * announcement "{n}" or "{n+}" (RFC 3501 4.3, RFC 7888): then *n is its
 * size (UINT64_MAX when over 32 bits) and *nonsync whether a "+" was
 * there.
 */
bool imap_parse_literal_end(const char *s, size_t len, uint64_t *n,
                            bool *nonsync);

/* Whether s is a well-formed modified UTF-7 mailbox name (RFC 3501
 * 5.1.3): printable US-ASCII with "&...-" shifts of modified base64 that
 * hold UTF-16 of characters outside printable US-ASCII. With wildcards, "%"
 * and "*" are allowed too (a LIST pattern). */
bool imap_parse_mutf7_valid(const char *s, bool wildcards);

/* Whether n is in set when "*" stands for star (the largest sequence
 * number or UID in use; 0 for an empty mailbox). */
bool imap_parse_seqset_contains(const struct imap_seqset *set, uint32_t n,
                                uint32_t star);

/* The command's name in upper case ("FETCH"; "" for IMAP_CMD_NONE). */
const char *imap_parse_cmd_name(enum imap_cmd_id id);

#endif
