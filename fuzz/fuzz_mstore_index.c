/*
 * fuzz_mstore_index.c - libFuzzer target for the parser of a folder's
 * index file ("samotop-uidlist", actors/mailbox/mstore_index.c).
 *
 * The input is the file's content. Whatever it is, mindex_parse() must not
 * crash, leak or read past it, and when it takes the file:
 *   - UIDVALIDITY and UIDNEXT are nonzero, UIDs strictly ascend and stay
 *     below UIDNEXT, at most the message limit;
 *   - every file name is non-empty, has no "/" and does not start with ".",
 *     every keyword bit names a keyword of the list;
 *   - what mindex_format() writes of it parses again to the same index.
 * When it refuses the file, it says why and leaves the index empty.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

#include "actors/mailbox/mstore_int.h"

/* Small, so that the limit is reached too. */
#define FUZZ_MESSAGES_MAX 1000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *what, size_t i)
{
    fprintf(stderr, "fuzz_mstore_index: %s (entry %zu)\n", what, i);
    abort();
}

static void
check(const struct mindex *ix)
{
    if (ix->uidvalidity == 0 || ix->uidnext == 0)
        fail("zero uidvalidity or uidnext", 0);
    if (ix->n > FUZZ_MESSAGES_MAX)
        fail("over the message limit", ix->n);
    for (size_t i = 0; i < ix->n; i++) {
        const struct mentry *e = &ix->e[i];

        if (e->uid == 0 || e->uid >= ix->uidnext)
            fail("uid out of range", i);
        if (i > 0 && e->uid <= ix->e[i - 1].uid)
            fail("uids not ascending", i);
        if (e->name == NULL || e->name[0] == '\0' || e->name[0] == '.' ||
            strchr(e->name, '/') != NULL || strchr(e->name, '\n') != NULL)
            fail("bad file name", i);
        if (ix->nkeywords < 64 && (e->keywords >> ix->nkeywords) != 0)
            fail("keyword bit past the list", i);
        if (mindex_find(ix, e->uid) != e)
            fail("uid not found by binary search", i);
    }
}

static void
same(const struct mindex *a, const struct mindex *b)
{
    if (a->uidvalidity != b->uidvalidity || a->uidnext != b->uidnext ||
        a->new_mtime_ns != b->new_mtime_ns ||
        a->cur_mtime_ns != b->cur_mtime_ns ||
        a->cur_verify_ns != b->cur_verify_ns || a->n != b->n ||
        a->nkeywords != b->nkeywords)
        fail("round trip changed the header", 0);
    for (unsigned k = 0; k < a->nkeywords; k++)
        if (strcmp(a->keywords[k], b->keywords[k]) != 0)
            fail("round trip changed a keyword", k);
    for (size_t i = 0; i < a->n; i++) {
        const struct mentry *x = &a->e[i], *y = &b->e[i];

        if (x->uid != y->uid || x->in_new != y->in_new || x->size != y->size ||
            x->date != y->date || x->keywords != y->keywords ||
            x->flags != y->flags || strcmp(x->name, y->name) != 0)
            fail("round trip changed a message", i);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mindex ix = {0}, again = {0};
    char why[128] = "";
    buf_t out = BUF_INIT;

    if (mindex_parse(&ix, (const char *)data, size, FUZZ_MESSAGES_MAX, why,
                     sizeof(why)) != 0) {
        if (why[0] == '\0')
            fail("refused without a reason", 0);
        if (ix.n != 0 || ix.e != NULL || ix.nkeywords != 0)
            fail("refused but not emptied", 0);
        return 0;
    }
    check(&ix);
    mindex_format(&ix, &out);
    if (mindex_parse(&again, out.data, out.len, FUZZ_MESSAGES_MAX, why,
                     sizeof(why)) != 0)
        fail(why, 0);
    same(&ix, &again);
    mindex_clear(&ix);
    mindex_clear(&again);
    buf_free(&out);
    return 0;
}
