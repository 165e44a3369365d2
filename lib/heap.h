/*
 * heap.h - an indexed binary min-heap: the loop's timers (lib/loop.c) and
 * the bus client's deadlines (bus/client.c) keep their entries in one.
 *
 * An entry embeds a struct heap_node and sets its key (and seq) before it
 * is pushed; entries with equal keys come out by seq, lowest first. The
 * node keeps its place in the array, so that an entry can leave from
 * anywhere in O(log n). The heap owns only its array (heap_free()); the
 * entries stay the caller's. Zeroed, a struct heap is empty and ready.
 */
#ifndef SAMOTOP_HEAP_H
#define SAMOTOP_HEAP_H

#include <stddef.h>
#include <stdint.h>

struct heap_node {
    int64_t key;
    uint64_t seq;
    size_t idx; /* its place in the heap's array, kept by the heap */
};

struct heap {
    struct heap_node **v;
    size_t n, cap;
};

/* The entry of type that embeds node as member. */
#define heap_entry(node, type, member)                                       \
    ((type *)(void *)((char *)(node) - offsetof(type, member)))

void heap_push(struct heap *h, struct heap_node *node);

/* Takes node, which must be in h, out of it. */
void heap_remove(struct heap *h, struct heap_node *node);

/* The least node, or NULL when h is empty. */
static inline struct heap_node *
heap_top(const struct heap *h)
{
    return h->n > 0 ? h->v[0] : NULL;
}

/* Frees the array (not the entries) and leaves h empty. */
void heap_free(struct heap *h);

#endif
