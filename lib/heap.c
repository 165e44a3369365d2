#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "heap.h"
#include "xalloc.h"

static bool
less(const struct heap_node *a, const struct heap_node *b)
{
    return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static void
set(struct heap *h, size_t i, struct heap_node *node)
{
    h->v[i] = node;
    node->idx = i;
}

static void
up(struct heap *h, size_t i)
{
    struct heap_node *node = h->v[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!less(node, h->v[parent]))
            break;
        set(h, i, h->v[parent]);
        i = parent;
    }
    set(h, i, node);
}

static void
down(struct heap *h, size_t i)
{
    struct heap_node *node = h->v[i];

    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        struct heap_node *best = node;

        if (l < h->n && less(h->v[l], best)) {
            m = l;
            best = h->v[l];
        }
        if (r < h->n && less(h->v[r], best))
            m = r;
        if (m == i)
            break;
        set(h, i, h->v[m]);
        i = m;
    }
    set(h, i, node);
}

void
heap_push(struct heap *h, struct heap_node *node)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = xrealloc(h->v, sizeof(*h->v) * h->cap);
    }
    set(h, h->n++, node);
    up(h, node->idx);
}

void
heap_remove(struct heap *h, struct heap_node *node)
{
    size_t i = node->idx;
    struct heap_node *last = h->v[--h->n];

    if (i == h->n)
        return;
    set(h, i, last);
    up(h, i);
    down(h, last->idx);
}

void
heap_free(struct heap *h)
{
    free(h->v);
    memset(h, 0, sizeof(*h));
}
