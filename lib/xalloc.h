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

#endif
