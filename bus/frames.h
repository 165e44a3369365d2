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

/* The same for len bytes at p. */
int hdr_parse_mem(const void *p, size_t len, struct hdr *h);

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

/*
 * A batch: several messages of the protocol in one frame, so that what a
 * process gathers in one turn of its loop (the requests its sessions made,
 * the replies its handlers gave) costs libzmq, the kernel and the peer's
 * wake-ups one message instead of one each.
 *
 * The frame holds records. A record is what a message of its own would
 * carry: its header (struct hdr's text, the same fields) and its envelope,
 * empty when the message has none; each of the two parts is preceded by
 * its length as 4 bytes, big-endian. A batch travels as a header frame of
 * two fields, "C2" or "W2" and BATCH (after the routing identity, to or
 * from a ROUTER), and then that one frame; proto.h lists which records go
 * where. Only envelopes of at most BATCH_ENV_MAX bytes are batched: a
 * bigger one goes alone, so that its body is never copied.
 *
 * The caller owns a struct batch (zeroed to start) and frees it with
 * batch_free().
 */
#define BATCH_ENV_MAX 16384
#define BATCH_BYTES (256 * 1024) /* a frame never grows beyond this */
#define BATCH_RECORDS_MAX 1024   /* records in one frame a reader takes */
/* Records batch_add() puts in one frame. More would cut the wake-ups
 * further but serialize the stages: a turn's 64 requests as one batch go
 * client, broker, worker, broker, client one after the other, while four
 * batches of 16 keep every process busy at once (bench/bus: about 135k
 * requests/s at 8 or 16, 113k at 64, 119k at 4). */
#define BATCH_SEND_RECORDS 16

struct batch {
    unsigned char *buf;
    size_t len, cap;
    int n; /* records */
};

/* Appends a record of n header fields (lens may be NULL for C strings)
 * and env (envlen bytes; 0 for none). Returns false, adding nothing, when
 * the batch is full (BATCH_BYTES or BATCH_SEND_RECORDS): send it first.
 * An empty batch takes any record that fits HDR_MAX and BATCH_ENV_MAX. */
bool batch_add(struct batch *b, int n, const char *const *fields,
               const size_t *lens, const void *env, size_t envlen);

void batch_reset(struct batch *b);
void batch_free(struct batch *b);

/* Reads the record at *pos of the len bytes at data into h (hdr_parse's
 * result) and env/envlen (pointing into data), and moves *pos past it.
 * Returns 1, 0 at the end of data, or -1 when the bytes are not a well
 * formed record (a length past the end, a header that hdr_parse refuses,
 * an envelope over BATCH_ENV_MAX, or more than BATCH_RECORDS_MAX records
 * when *count is kept by the caller from 0). */
int batch_next(const void *data, size_t len, size_t *pos, int *count,
               struct hdr *h, const void **env, size_t *envlen);

/* Called with each record of a batch, in order (batch_each()). */
typedef void batch_record_fn(void *arg, const struct hdr *h, const void *env,
                             size_t envlen);

/* Gives each record of the batch frame to fn. Returns 0 when the whole
 * frame was records, or -1 when it is malformed after the *records that
 * fn was given (the rest is dropped). */
int batch_each(zmq_msg_t *frame, batch_record_fn *fn, void *arg,
               int *records);

/* Sends b to sock, with the routing identity id (idlen bytes; NULL for a
 * DEALER) first, and empties it. One record goes as a message of its own
 * (its header frame and its envelope frame, if any); more go as a batch
 * whose header is proto | BATCH. Returns 0 (also for an empty batch), or
 * ERR_CLOSED when the message could not be queued: b is kept then. */
int batch_send(void *sock, const void *id, size_t idlen, const char *proto,
               struct batch *b);

#endif
