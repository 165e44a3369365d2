/*
 * imap_mime.h - the MIME structure of a message as IMAP FETCH shows it:
 * ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 7.4.2) and the octets of a
 * BODY[section] (6.4.5), from the message's octets (RFC 5322, RFC 2045,
 * RFC 2046).
 *
 * imap_mime_parse() reads a message once and keeps its tree; the other
 * calls format from the tree. The message is borrowed: it must stay put
 * while the tree lives, as sections point into it. Nothing here fails on
 * a malformed message: what cannot be read is shown as the RFCs' defaults
 * (text/plain; charset=us-ascii, 7BIT). Nesting (multiparts and
 * message/rfc822 inside one another) stops at IMAP_MIME_DEPTH_MAX and the
 * tree at IMAP_MIME_PARTS_MAX parts: a part past either is shown as
 * application/octet-stream, its octets as they are. Strings are written
 * as the message has them (encoded-words are not decoded, RFC 3501 7.4.2),
 * header lines unfolded.
 */
#ifndef SAMOTOP_IMAP_MIME_H
#define SAMOTOP_IMAP_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "lib/imap_parse.h"

typedef struct imap_mime imap_mime_t;

#define IMAP_MIME_DEPTH_MAX 16
#define IMAP_MIME_PARTS_MAX 500

/* The tree of msg[0..len) (borrowed; see above). */
imap_mime_t *imap_mime_parse(const char *msg, size_t len);

/* Frees the tree and NULLs *m_p; NULL is fine. */
void imap_mime_destroy(imap_mime_t **m_p);

/* Appends the ENVELOPE value, "(date subject (from) ... message-id)". */
void imap_mime_envelope(const imap_mime_t *m, buf_t *b);

/* Appends the BODYSTRUCTURE value, or with ext false the BODY one (no
 * extension data). */
void imap_mime_bodystructure(const imap_mime_t *m, bool ext, buf_t *b);

/*
 * Finds the octets BODY[sec] names: *data and *len point into the message,
 * or, for HEADER.FIELDS and HEADER.FIELDS.NOT, into scratch, which gets
 * the fields kept and the blank line. Returns false when the message has
 * no such part (a part number past the last, HEADER of a part that is no
 * message/rfc822); the caller then sends NIL or an empty string.
 */
bool imap_mime_section(const imap_mime_t *m, const struct imap_section *sec,
                       buf_t *scratch, const char **data, size_t *len);

/* The message's size and the size of its header with the blank line. */
size_t imap_mime_size(const imap_mime_t *m);
size_t imap_mime_header_size(const imap_mime_t *m);

#endif
