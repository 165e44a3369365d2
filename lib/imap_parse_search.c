/*
 * imap_parse_search.c - SEARCH's arguments (RFC 3501 6.4.4): the charset
 * and the keys, read into a tree of struct imap_search_key. The only
 * recursion of the parser is here, bounded by IMAP_DEPTH_MAX.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "lib/imap_parse.h"
#include "lib/imap_parse_int.h"

enum sk_arg {
    A_NONE,
    A_STR,
    A_DATE,
    A_NUM,
    A_FLAG,
    A_HEADER,
    A_SET,
    A_NOT,
    A_OR
};

static const struct {
    const char *name;
    enum imap_search_type type;
    enum sk_arg arg;
} search_keys[] = {
    {"ALL", IMAP_SK_ALL, A_NONE},
    {"ANSWERED", IMAP_SK_ANSWERED, A_NONE},
    {"BCC", IMAP_SK_BCC, A_STR},
    {"BEFORE", IMAP_SK_BEFORE, A_DATE},
    {"BODY", IMAP_SK_BODY, A_STR},
    {"CC", IMAP_SK_CC, A_STR},
    {"DELETED", IMAP_SK_DELETED, A_NONE},
    {"DRAFT", IMAP_SK_DRAFT, A_NONE},
    {"FLAGGED", IMAP_SK_FLAGGED, A_NONE},
    {"FROM", IMAP_SK_FROM, A_STR},
    {"HEADER", IMAP_SK_HEADER, A_HEADER},
    {"KEYWORD", IMAP_SK_KEYWORD, A_FLAG},
    {"LARGER", IMAP_SK_LARGER, A_NUM},
    {"NEW", IMAP_SK_NEW, A_NONE},
    {"NOT", IMAP_SK_NOT, A_NOT},
    {"OLD", IMAP_SK_OLD, A_NONE},
    {"ON", IMAP_SK_ON, A_DATE},
    {"OR", IMAP_SK_OR, A_OR},
    {"RECENT", IMAP_SK_RECENT, A_NONE},
    {"SEEN", IMAP_SK_SEEN, A_NONE},
    {"SENTBEFORE", IMAP_SK_SENTBEFORE, A_DATE},
    {"SENTON", IMAP_SK_SENTON, A_DATE},
    {"SENTSINCE", IMAP_SK_SENTSINCE, A_DATE},
    {"SINCE", IMAP_SK_SINCE, A_DATE},
    {"SMALLER", IMAP_SK_SMALLER, A_NUM},
    {"SUBJECT", IMAP_SK_SUBJECT, A_STR},
    {"TEXT", IMAP_SK_TEXT, A_STR},
    {"TO", IMAP_SK_TO, A_STR},
    {"UID", IMAP_SK_UID, A_SET},
    {"UNANSWERED", IMAP_SK_UNANSWERED, A_NONE},
    {"UNDELETED", IMAP_SK_UNDELETED, A_NONE},
    {"UNDRAFT", IMAP_SK_UNDRAFT, A_NONE},
    {"UNFLAGGED", IMAP_SK_UNFLAGGED, A_NONE},
    {"UNKEYWORD", IMAP_SK_UNKEYWORD, A_FLAG},
    {"UNSEEN", IMAP_SK_UNSEEN, A_NONE},
};

static bool search_key(imap_parse_t *p, struct imap_search_key **out);

static struct imap_search_key *
new_key(imap_parse_t *p, enum imap_search_type type)
{
    struct imap_search_key *k = imap_parse_alloc(p, sizeof(*k));

    memset(k, 0, sizeof(*k));
    k->type = type;
    return k;
}

/* Keys separated by single spaces until ")" or the end of the command;
 * linked through next under parent->sub. */
static bool
search_list(imap_parse_t *p, struct imap_search_key *parent, bool paren)
{
    struct imap_search_key **tail = (struct imap_search_key **)&parent->sub;

    for (;;) {
        struct imap_search_key *k;

        if (!search_key(p, &k))
            return false;
        *tail = k;
        tail = (struct imap_search_key **)&k->next;
        if (paren && peek(p) == ')')
            return true;
        if (!paren && at_eol(p))
            return true;
        if (!expect_sp(p))
            return false;
    }
}

static bool
search_key(imap_parse_t *p, struct imap_search_key **out)
{
    const char *s;
    size_t n, i;
    struct imap_search_key *k;
    bool ok = false;

    if (p->depth >= IMAP_DEPTH_MAX)
        return fail(p, "Search nested too deep");
    p->depth++;
    if (peek(p) == '(') {
        p->p++;
        k = new_key(p, IMAP_SK_AND);
        ok = search_list(p, k, true) && expect_char(p, ')', "Expected \")\"");
        goto out;
    }
    if (peek(p) == '*' || isdigit(peek(p))) {
        k = new_key(p, IMAP_SK_SEQSET);
        ok = imap_parse_seqset(p, &k->set);
        goto out;
    }
    k = NULL;
    if (!imap_parse_atom(p, &s, &n))
        goto out;
    for (i = 0; i < sizeof(search_keys) / sizeof(*search_keys); i++)
        if (word_is(s, n, search_keys[i].name))
            break;
    if (i == sizeof(search_keys) / sizeof(*search_keys)) {
        fail(p, "Unknown search key");
        goto out;
    }
    k = new_key(p, search_keys[i].type);
    if (search_keys[i].arg != A_NONE && !expect_sp(p))
        goto out;
    switch (search_keys[i].arg) {
    case A_NONE:
        ok = true;
        break;
    case A_STR:
        ok = imap_parse_astring(p, &k->str);
        break;
    case A_DATE:
        ok = imap_parse_date(p, &k->date);
        break;
    case A_NUM:
        ok = imap_parse_number(p, false, &k->num);
        break;
    case A_FLAG:
        /* flag-keyword = atom */
        ok = imap_parse_atom(p, &s, &n);
        if (ok)
            k->str = imap_parse_strndup(p, s, n);
        break;
    case A_HEADER:
        ok = imap_parse_astring(p, &k->field) && expect_sp(p) &&
             imap_parse_astring(p, &k->str);
        break;
    case A_SET:
        ok = imap_parse_seqset(p, &k->set);
        break;
    case A_NOT:
        ok = search_key(p, (struct imap_search_key **)&k->sub);
        break;
    case A_OR: {
        struct imap_search_key *a, *b;

        ok = search_key(p, &a) && expect_sp(p) && search_key(p, &b);
        if (ok) {
            a->next = b;
            k->sub = a;
        }
        break;
    }
    }
out:
    p->depth--;
    *out = k;
    return ok;
}

bool
imap_parse_search_args(imap_parse_t *p, struct imap_cmd *c)
{
    struct imap_search_key *prog;

    if (!expect_sp(p))
        return false;
    c->search.charset = NULL;
    if (p->end - p->p > 8 && strncasecmp(p->p, "CHARSET ", 8) == 0) {
        p->p += 8;
        if (!imap_parse_astring(p, &c->search.charset) || !expect_sp(p))
            return false;
    }
    prog = new_key(p, IMAP_SK_AND);
    p->depth = 0;
    if (!search_list(p, prog, false))
        return false;
    c->search.prog = prog;
    return true;
}
