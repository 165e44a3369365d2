/*
 * frames.h - reading and writing multipart ZeroMQ messages as arrays of
 * zmq_msg_t, shared by broker, client and worker.
 *
 * frames_recv() fills an array the caller provides and owns; the caller
 * closes the frames with frames_close(). Frames beyond the array are read
 * and discarded, and the count returned says how many there were, so a
 * message with too many frames is seen and refused, never half-read.
 */
#ifndef SAMOTOP_FRAMES_H
#define SAMOTOP_FRAMES_H

#include <stdbool.h>
#include <stddef.h>

#include <zmq.h>

#define FRAMES_MAX 8

/* Receives one whole message without blocking. Returns the number of frames
 * it had (possibly more than max; only max are kept), 0 when nothing was
 * waiting, or a negative ERR_*. */
int frames_recv(void *sock, zmq_msg_t *f, int max);

void frames_close(zmq_msg_t *f, int n);

/* Whether frame f holds exactly the string s. */
bool frame_is(zmq_msg_t *f, const char *s);

/* Copies frame f into out (of outlen) as a C string; false when it does
 * not fit or holds a NUL. */
bool frame_str(zmq_msg_t *f, char *out, size_t outlen);

/* A routing header: up to HDR_FIELDS fields of text in ONE frame, joined
 * by NUL bytes (fields never hold NUL: binary ones travel as hex). One
 * frame instead of one per field roughly halves libzmq's work per message,
 * which is most of what the broker does. */
#define HDR_MAX 1536
#define HDR_FIELDS 6

struct hdr {
    char buf[HDR_MAX + 1];
    const char *f[HDR_FIELDS]; /* NUL-terminated, into buf */
    size_t len[HDR_FIELDS];
    int n;
};

/* Splits frame into h's fields. Returns the field count, or -1 when the
 * frame is longer than HDR_MAX or has more than HDR_FIELDS fields. */
int hdr_parse(zmq_msg_t *frame, struct hdr *h);

/* Joins n fields (lens may be NULL for C strings) into out; returns the
 * length, or 0 when it does not fit. */
size_t hdr_build(char *out, size_t outlen, int n, const char *const *fields,
                 const size_t *lens);

/* Whether field i of h is exactly s. */
bool hdr_is(const struct hdr *h, int i, const char *s);

/* Bytes as lower-case hex into out (2 * len + 1 bytes); returns out. */
char *hex_encode(const void *p, size_t len, char *out);

/* Hex text back into bytes; returns the byte count or -1 when s is not
 * even-length lower-case hex or does not fit. */
int hex_decode(const char *s, size_t len, unsigned char *out, size_t outlen);

/* Sends n parts given as pointers and lengths, without blocking. Returns 0,
 * or ERR_CLOSED when the message could not be queued (no peer, or the
 * peer's queue full): nothing was sent then. */
int frames_send(void *sock, int n, const void *const *parts,
                const size_t *lens);

#endif
