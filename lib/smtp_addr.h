/*
 * smtp_addr.h - RFC 5321 paths and mailboxes: parsing, checking and
 * normalising the addresses of MAIL FROM and RCPT TO.
 *
 * Used by the SMTP server engine (lib/smtp_server.h), by guard and by the
 * admin tool. No allocation, no I/O: a parsed path lives in a struct
 * smtp_path that the caller owns, sized by the RFC 5321 4.5.3.1 limits.
 *
 * What is accepted is RFC 5321 4.1.2: a Dot-string or Quoted-string local
 * part, a domain or an address literal ([192.0.2.1], [IPv6:2001:db8::1]),
 * an optional source route (parsed, then dropped as 4.1.1.3 allows), and,
 * only when the caller allows it, "<>" (the null reverse-path), the bare
 * "<Postmaster>" (4.1.1.3) and UTF-8 (RFC 6531 3.3, SMTPUTF8). "%" and "!"
 * are ordinary local-part characters here: nothing is routed by them.
 */
#ifndef SAMOTOP_SMTP_ADDR_H
#define SAMOTOP_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1.1-3: octets, as transmitted. */
#define SMTP_LOCAL_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX 256

/* Flags for smtp_path_parse() and smtp_mailbox_parse(). */
enum {
    SMTP_ADDR_NULL_OK = 1 << 0,    /* "<>" accepted: a reverse-path */
    SMTP_ADDR_POSTMASTER = 1 << 1, /* "<Postmaster>" with no domain */
    SMTP_ADDR_UTF8 = 1 << 2,       /* UTF-8 allowed (RFC 6531) */
};

struct smtp_path {
    /* The normalised mailbox, without angle brackets: the local part in its
     * shortest form (unquoted when it is a valid Dot-string, else quoted
     * with the fewest backslashes), "@", the domain in lower case (ASCII
     * letters only; an IPv6 literal as "[IPv6:...]" with lower-case hex).
     * "" for "<>"; "postmaster" for "<Postmaster>". */
    char mailbox[SMTP_PATH_MAX + 1];
    /* The local part with quotes and backslashes removed (may then hold
     * spaces, "@" and the like: use smtp_local_needs_quoting()), and the
     * normalised domain; both "" for "<>", domain "" for "<Postmaster>". */
    char local[SMTP_LOCAL_MAX + 1];
    char domain[SMTP_DOMAIN_MAX + 1];
    bool null;       /* "<>" */
    bool postmaster; /* "<Postmaster>" with no domain */
    bool quoted;     /* the local part came as a Quoted-string */
    bool literal;    /* the domain is an address literal */
    bool utf8;       /* holds non-ASCII octets */
    bool route;      /* a source route was given (and dropped) */
};

/*
 * Parses a Path ("<...>") at the start of s (len bytes, not NUL-terminated
 * needed). On success fills *out, sets *used to the bytes taken (through
 * the ">") and returns 0. On failure returns ERR_INVAL (syntax) or
 * ERR_TOO_BIG (an RFC 5321 4.5.3.1 length) and points *why at a static
 * reason. ERR_INVAL with out->utf8 set means the path is well-formed but
 * holds UTF-8 while SMTP_ADDR_UTF8 was not given (RFC 6531 3.5: 553
 * 5.6.7). used and why may be NULL.
 */
int smtp_path_parse(const char *s, size_t len, unsigned flags,
                    struct smtp_path *out, size_t *used, const char **why);

/*
 * Parses a whole bare Mailbox ("local@domain", no brackets, nothing after
 * it), as typed into the admin tool or kept in Redis. Same results as
 * smtp_path_parse(); SMTP_ADDR_NULL_OK accepts "".
 */
int smtp_mailbox_parse(const char *s, size_t len, unsigned flags,
                       struct smtp_path *out, const char **why);

/*
 * Whether a decoded local part (len bytes) must be sent as a Quoted-string
 * because it is not a Dot-string (RFC 5321 4.1.2): empty, a dot at either
 * end, two dots in a row, or a character outside atext (non-ASCII counts
 * as atext only when utf8 is true).
 */
bool smtp_local_needs_quoting(const char *local, size_t len, bool utf8);

/*
 * Writes the local part (len bytes, decoded) as it must be sent: as is when
 * it is a Dot-string, else quoted with backslashes before '"' and '\'.
 * Returns the length it needs without the NUL; writes a NUL-terminated
 * prefix when size is too small, like snprintf().
 */
size_t smtp_local_quote(const char *local, size_t len, bool utf8, char *dst,
                        size_t size);

/*
 * Checks an RFC 3461 4 xtext (ENVID, ORCPT, AUTH=): printable ASCII other
 * than "+" and "=", and "+XX" with upper-case hex. Returns true when valid.
 */
bool smtp_xtext_valid(const char *s, size_t len);

/*
 * Decodes an xtext (which must be valid) into dst (size bytes, NUL
 * terminated, truncated like snprintf()); returns the decoded length.
 */
size_t smtp_xtext_decode(const char *s, size_t len, char *dst, size_t size);

/*
 * Checks len bytes for well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). Returns true when valid.
 */
bool smtp_utf8_valid(const char *s, size_t len);

#endif
