/*
 * imap_parse_fetch.c - FETCH's arguments (RFC 3501 6.4.5): the sequence
 * set and the attributes, with the macros ALL, FAST and FULL expanded and
 * sections (part numbers, HEADER.FIELDS lists, partial ranges) read into
 * struct imap_fetch_att.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "lib/imap_parse.h"
#include "lib/imap_parse_int.h"

static bool
header_list(imap_parse_t *p, struct imap_strs *out)
{
    struct vec v = {0};

    if (!expect_sp(p) || !expect_char(p, '(', "Expected a header list"))
        return false;
    for (;;) {
        const char *f;
        char *u;

        if (!imap_parse_astring(p, &f))
            return false;
        /* A field name (RFC 5322 3.6.8): printable, no colon. */
        if (*f == '\0')
            return fail(p, "Invalid header field name");
        u = (char *)f;
        for (; *u; u++) {
            if (*u <= 32 || *u >= 127 || *u == ':')
                return fail(p, "Invalid header field name");
            *u = (char)toupper((unsigned char)*u);
        }
        imap_parse_vec_push(p, &v, f);
        if (peek(p) != ' ')
            break;
        p->p++;
    }
    if (!expect_char(p, ')', "Invalid header list"))
        return false;
    *out = vec_strs(&v);
    return true;
}

/* section-text or section-msgtext after the parts, if any. */
static bool
section_text(imap_parse_t *p, struct imap_section *sec)
{
    const char *s = p->p;
    size_t n;

    while (p->p < p->end && (isalpha((unsigned char)*p->p) || *p->p == '.'))
        p->p++;
    n = (size_t)(p->p - s);
    if (word_is(s, n, "HEADER")) {
        sec->spec = IMAP_SEC_HEADER;
    } else if (word_is(s, n, "TEXT")) {
        sec->spec = IMAP_SEC_TEXT;
    } else if (word_is(s, n, "MIME") && sec->nparts > 0) {
        sec->spec = IMAP_SEC_MIME;
    } else if (word_is(s, n, "HEADER.FIELDS")) {
        sec->spec = IMAP_SEC_FIELDS;
        return header_list(p, &sec->fields);
    } else if (word_is(s, n, "HEADER.FIELDS.NOT")) {
        sec->spec = IMAP_SEC_FIELDS_NOT;
        return header_list(p, &sec->fields);
    } else {
        return fail(p, "Invalid section");
    }
    return true;
}

/* "[" [section-spec] "]" (RFC 3501 9, "section"). */
static bool
section(imap_parse_t *p, struct imap_section *sec)
{
    memset(sec, 0, sizeof(*sec));
    p->p++; /* "[" */
    if (peek(p) == ']') {
        p->p++;
        return true;
    }
    if (isdigit(peek(p))) {
        for (;;) {
            uint32_t n;

            if (sec->nparts == IMAP_SECTION_MAX)
                return fail(p, "Section nested too deep");
            if (!imap_parse_number_raw(p, true, &n))
                return fail(p, "Invalid section");
            sec->part[sec->nparts++] = n;
            if (peek(p) != '.')
                break;
            p->p++;
            if (!isdigit(peek(p))) {
                if (!section_text(p, sec))
                    return false;
                break;
            }
        }
    } else if (!section_text(p, sec)) {
        return false;
    }
    return expect_char(p, ']', "Invalid section");
}

static void
add_att(imap_parse_t *p, struct vec *v, enum imap_fetch_item item)
{
    struct imap_fetch_att *a = imap_parse_alloc(p, sizeof(*a));

    memset(a, 0, sizeof(*a));
    a->item = item;
    imap_parse_vec_push(p, v, a);
}

static bool
fetch_att(imap_parse_t *p, struct vec *v)
{
    static const struct {
        const char *name;
        enum imap_fetch_item item;
    } simple[] = {
        {"ENVELOPE", IMAP_FETCH_ENVELOPE},
        {"FLAGS", IMAP_FETCH_FLAGS},
        {"INTERNALDATE", IMAP_FETCH_INTERNALDATE},
        {"RFC822", IMAP_FETCH_RFC822},
        {"RFC822.HEADER", IMAP_FETCH_RFC822_HEADER},
        {"RFC822.SIZE", IMAP_FETCH_RFC822_SIZE},
        {"RFC822.TEXT", IMAP_FETCH_RFC822_TEXT},
        {"BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE},
        {"UID", IMAP_FETCH_UID},
    };
    const char *s = p->p;
    struct imap_fetch_att *a;
    size_t n;
    bool peekf;

    while (p->p < p->end && (isalnum((unsigned char)*p->p) || *p->p == '.'))
        p->p++;
    n = (size_t)(p->p - s);
    if (n == 0)
        return fail(p, at_eol(p) ? "Missing argument"
                                 : "Expected a fetch attribute");
    for (size_t i = 0; i < sizeof(simple) / sizeof(*simple); i++)
        if (word_is(s, n, simple[i].name)) {
            add_att(p, v, simple[i].item);
            return true;
        }
    peekf = word_is(s, n, "BODY.PEEK");
    if (!peekf && !word_is(s, n, "BODY"))
        return fail(p, "Unknown fetch attribute");
    if (peek(p) != '[') {
        if (peekf)
            return fail(p, "BODY.PEEK needs a section");
        add_att(p, v, IMAP_FETCH_BODY);
        return true;
    }
    add_att(p, v, IMAP_FETCH_SECTION);
    a = (struct imap_fetch_att *)v->v[v->n - 1];
    a->peek = peekf;
    if (!section(p, &a->sec))
        return false;
    if (peek(p) == '<') {
        p->p++;
        if (!imap_parse_number_raw(p, false, &a->offset) ||
            !expect_char(p, '.', "Invalid partial") ||
            !imap_parse_number_raw(p, true, &a->count) ||
            !expect_char(p, '>', "Invalid partial"))
            return fail(p, "Invalid partial");
        a->partial = true;
    }
    return true;
}

bool
imap_parse_fetch_args(imap_parse_t *p, struct imap_cmd *c)
{
    static const enum imap_fetch_item all[] = {
        IMAP_FETCH_FLAGS, IMAP_FETCH_INTERNALDATE, IMAP_FETCH_RFC822_SIZE,
        IMAP_FETCH_ENVELOPE, IMAP_FETCH_BODY};
    struct imap_fetch_args *f = &c->fetch;
    struct vec v = {0};
    const char *s = NULL;
    size_t n = 0;

    if (!expect_sp(p) || !imap_parse_seqset(p, &f->set) || !expect_sp(p))
        return false;
    if (peek(p) == '(') {
        p->p++;
        for (;;) {
            if (!fetch_att(p, &v))
                return false;
            if (peek(p) != ' ')
                break;
            p->p++;
        }
        if (!expect_char(p, ')', "Invalid fetch attribute list"))
            return false;
    } else {
        /* A macro is only ever alone (RFC 3501 6.4.5). */
        const char *save = p->p;

        while (p->p < p->end && isalpha((unsigned char)*p->p))
            p->p++;
        s = save;
        n = (size_t)(p->p - s);
        if (word_is(s, n, "ALL") || word_is(s, n, "FAST") ||
            word_is(s, n, "FULL")) {
            size_t k = word_is(s, n, "FAST") ? 3 : word_is(s, n, "ALL") ? 4 : 5;

            if (is_atom_char(peek(p)) || peek(p) == '[')
                return fail(p, "Unknown fetch attribute");
            for (size_t i = 0; i < k; i++)
                add_att(p, &v, all[i]);
        } else {
            p->p = save;
            if (!fetch_att(p, &v))
                return false;
        }
    }
    f->items = 0;
    for (size_t i = 0; i < v.n; i++)
        f->items |= 1u << ((const struct imap_fetch_att *)v.v[i])->item;
    /* RFC 3501 6.4.8: UID FETCH answers with UIDs, asked for or not. */
    if (c->uid && !(f->items & (1u << IMAP_FETCH_UID))) {
        add_att(p, &v, IMAP_FETCH_UID);
        f->items |= 1u << IMAP_FETCH_UID;
    }
    f->sets_seen = false;
    for (size_t i = 0; i < v.n; i++) {
        const struct imap_fetch_att *a = v.v[i];

        if (a->item == IMAP_FETCH_RFC822 || a->item == IMAP_FETCH_RFC822_TEXT ||
            (a->item == IMAP_FETCH_SECTION && !a->peek))
            f->sets_seen = true;
    }
    /* The list of pointers becomes an array of attributes. */
    {
        struct imap_fetch_att *arr = imap_parse_alloc(p, v.n * sizeof(*arr));

        for (size_t i = 0; i < v.n; i++)
            arr[i] = *(const struct imap_fetch_att *)v.v[i];
        f->att = arr;
        f->natt = v.n;
    }
    return true;
}
