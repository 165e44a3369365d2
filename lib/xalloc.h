/*
 * xalloc.h - allocation that never returns NULL.
 *
 * Running out of memory is not a condition a mail server can recover from in
 * the middle of a protocol step, so these abort with a message instead; the
 * supervisor restarts the process. The caller owns every pointer returned.
 */
#ifndef SAMOTOP_XALLOC_H
#define SAMOTOP_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);

/* A new string made like printf(). */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * For a process that allocates and frees a buffer the size of a message
 * for every message (the listener, the mailbox): blocks under 4 MiB come
 * from the heap, which keeps up to 32 MiB free instead of giving it back,
 * so a message's buffers do not fault their pages in afresh each time
 * (glibc's defaults mmap blocks from 128 KiB, then trim the heap each
 * time its free top passes twice the largest block freed: with 256 KiB
 * messages, 20-50 page faults a message). Call once at start; nothing
 * where malloc has no such settings.
 */
void xalloc_keep_message_buffers(void);

#endif
