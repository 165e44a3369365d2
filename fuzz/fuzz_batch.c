/*
 * fuzz_batch.c - libFuzzer target for the batch reader (bus/frames.h:
 * batch_next), which every broker, client and worker runs on frames a
 * peer sent.
 *
 * The input is one batch frame. It is read record by record, *count kept
 * from 0 as the bus does; whatever the bytes, the reader must not read
 * past them (ASan), and:
 *   - it accepts a record exactly when a second, independent reading of
 *     the layout (written here from the header comment) finds it well
 *     formed, and it stops with 0 only at the exact end;
 *   - an accepted record lies inside what it consumed: *pos strictly
 *     increases, the envelope ends at the new *pos and is at most
 *     BATCH_ENV_MAX bytes, the header has 1 to HDR_FIELDS fields, each
 *     NUL-terminated and free of NULs, joined to the consumed length;
 *   - batch_add() of the accepted records (their fields and envelopes)
 *     writes back exactly the bytes consumed, refusing a record only when
 *     the batch is full (BATCH_SEND_RECORDS or BATCH_BYTES), and the
 *     writer's batches, laid end to end, are the input again;
 *   - read again with *count starting 2 short of BATCH_RECORDS_MAX, it
 *     takes the same first records, at most 2, and then refuses.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus/frames.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t
be32(const uint8_t *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

/* The reference: whether a well-formed record starts at pos, and where it
 * ends. */
static bool
ref_record(const uint8_t *data, size_t size, size_t pos, size_t *end)
{
    size_t hl, el, fields = 1;

    if (size - pos < 4)
        return false;
    hl = be32(data + pos);
    pos += 4;
    if (hl > HDR_MAX || size - pos < hl)
        return false;
    for (size_t i = 0; i < hl; i++)
        fields += data[pos + i] == 0;
    if (fields > HDR_FIELDS)
        return false;
    pos += hl;
    if (size - pos < 4)
        return false;
    el = be32(data + pos);
    pos += 4;
    if (el > BATCH_ENV_MAX || size - pos < el)
        return false;
    *end = pos + el;
    return true;
}

/* The writer's batch so far must be the input from start to at. */
static void
check_written(const struct batch *b, const uint8_t *data, size_t start,
              size_t at)
{
    if (b->len != at - start ||
        (b->len > 0 && memcmp(b->buf, data + start, b->len) != 0))
        abort(); /* re-encoding did not give the bytes read */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hdr h;
    static struct batch b;
    size_t pos = 0, start = 0, end = 0, first_end[2] = {0, 0};
    int count = 0, rc, records = 0;
    const void *env;
    size_t envlen;

    batch_reset(&b);
    for (;;) {
        size_t old = pos, hl, sum = 0;
        bool well = old < size && ref_record(data, size, old, &end);

        rc = batch_next(data, size, &pos, &count, &h, &env, &envlen);
        if (rc == 0) {
            if (old != size || pos != size)
                abort(); /* an end that is not the end */
            break;
        }
        if (rc == -1) {
            if (old >= size || well)
                abort(); /* a refused record the reference takes */
            break;
        }
        if (rc != 1 || !well || pos != end || pos <= old || pos > size)
            abort(); /* an accepted record the reference refuses */
        if (++records != count)
            abort();
        if (records <= 2)
            first_end[records - 1] = pos;
        /* The record's parts lie where the layout puts them. */
        if ((const uint8_t *)env < data + old + 8 ||
            (const uint8_t *)env + envlen != data + pos ||
            envlen > BATCH_ENV_MAX)
            abort();
        hl = pos - old - 8 - envlen;
        if (h.n < 1 || h.n > HDR_FIELDS || hl > HDR_MAX)
            abort();
        for (int i = 0; i < h.n; i++) {
            if (strlen(h.f[i]) != h.len[i])
                abort(); /* a field holding a NUL or not ended by one */
            sum += h.len[i] + (i > 0);
        }
        if (sum != hl || memcmp(h.buf, data + old + 4, hl) != 0)
            abort();
        /* Written back. */
        if (!batch_add(&b, h.n, (const char *const *)h.f, h.len, env,
                       envlen)) {
            if (b.n == 0 || (b.n < BATCH_SEND_RECORDS &&
                             b.len + 8 + hl + envlen <= BATCH_BYTES))
                abort(); /* refused a record the batch had room for */
            check_written(&b, data, start, old);
            batch_reset(&b);
            start = old;
            if (!batch_add(&b, h.n, (const char *const *)h.f, h.len, env,
                           envlen))
                abort(); /* an empty batch refused a valid record */
        }
        if (b.n > BATCH_SEND_RECORDS || (b.n > 1 && b.len > BATCH_BYTES))
            abort(); /* took a record the batch had no room for */
    }
    check_written(&b, data, start, pos);

    /* Again, 2 records short of the limit. */
    pos = 0;
    count = BATCH_RECORDS_MAX - 2;
    for (int i = 0; i < 3; i++) {
        rc = batch_next(data, size, &pos, &count, &h, &env, &envlen);
        if (i < records && i < 2) {
            if (rc != 1 || pos != first_end[i])
                abort();
        } else if (i == records && pos == size) {
            if (rc != 0)
                abort(); /* the end is 0, even at the limit */
            break;
        } else {
            if (rc != -1)
                abort(); /* past the limit, or malformed */
            break;
        }
    }
    return 0;
}
