/*
 * imap_parse_int.h - the inside of the IMAP command parser, shared by its
 * files and by nothing else (not installed).
 *
 * imap_parse.c holds the arena, the cursor, the grammar's common elements
 * (strings, mailboxes, sequence sets, flags, dates) and the commands;
 * imap_parse_fetch.c FETCH's attributes and imap_parse_search.c SEARCH's
 * keys. All run on one struct imap_parse, whose cursor never passes the
 * end of the command.
 */
#ifndef SAMOTOP_IMAP_PARSE_INT_H
#define SAMOTOP_IMAP_PARSE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "lib/imap_parse.h"

struct block {
    struct block *next;
    size_t cap, used;
    max_align_t data[];
};

struct imap_parse {
    struct block *blocks; /* newest first; the last is the first made */
    struct imap_cmd cmd;
    /* The command being parsed. */
    const char *p, *end;
    const char *why;
    int depth;
};

/* A growing array of pointers in the arena. */
struct vec {
    const void **v;
    size_t n, cap;
};

/* The cursor and the character classes: small enough to be inline. */

static inline struct imap_strs
vec_strs(const struct vec *v)
{
    return (struct imap_strs){.v = (const char *const *)v->v, .n = v->n};
}

static inline bool
is_atom_char(int c)
{
    /* ATOM-CHAR: any CHAR but atom-specials: "(" ")" "{" SP CTL "%" "*"
     * DQUOTE "\" "]". */
    return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

static inline bool
fail(imap_parse_t *p, const char *why)
{
    if (p->why == NULL)
        p->why = why;
    return false;
}

static inline int
peek(const imap_parse_t *p)
{
    return p->p < p->end ? (unsigned char)*p->p : -1;
}

static inline bool
at_eol(const imap_parse_t *p)
{
    const char *q = p->p;

    while (q < p->end && *q == ' ')
        q++;
    return p->end - q == 2 && q[0] == '\r' && q[1] == '\n';
}

static inline bool
expect_sp(imap_parse_t *p)
{
    if (peek(p) == ' ') {
        p->p++;
        return true;
    }
    return fail(p, at_eol(p) ? "Missing argument" : "Expected a space");
}

static inline bool
expect_char(imap_parse_t *p, int c, const char *why)
{
    if (peek(p) == c) {
        p->p++;
        return true;
    }
    return fail(p, at_eol(p) ? "Missing argument" : why);
}

/* Whether the atom just read is word, in any case. */
static inline bool
word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* imap_parse.c */

/* Arena memory, freed with the command; never NULL. */
void *imap_parse_alloc(imap_parse_t *p, size_t n);
char *imap_parse_strndup(imap_parse_t *p, const char *s, size_t n);
void imap_parse_vec_push(imap_parse_t *p, struct vec *v, const void *x);

/* Grammar elements (RFC 3501 9): each reads one at the cursor and moves
 * past it, or fails with a reason. */
bool imap_parse_atom(imap_parse_t *p, const char **s, size_t *n);
bool imap_parse_number(imap_parse_t *p, bool nz, uint32_t *out);
/* A number that sets no reason on failure: the caller gives its own. */
bool imap_parse_number_raw(imap_parse_t *p, bool nz, uint32_t *out);
bool imap_parse_astring(imap_parse_t *p, const char **out);
bool imap_parse_seqset(imap_parse_t *p, struct imap_seqset *out);
bool imap_parse_date(imap_parse_t *p, struct imap_date *d);

/* imap_parse_fetch.c */

/* FETCH's arguments after its name. */
bool imap_parse_fetch_args(imap_parse_t *p, struct imap_cmd *c);

/* imap_parse_search.c */

/* SEARCH's arguments after its name. */
bool imap_parse_search_args(imap_parse_t *p, struct imap_cmd *c);

#endif
