/*
 * auth_pool.c - password verifications on worker threads, so that scrypt
 * (tens of milliseconds, 32 MiB) never stalls the actor's loop.
 *
 * Jobs wait in a bounded FIFO; each thread takes one, runs passwd_verify()
 * with no lock held, puts the job on the done list and writes the eventfd
 * the loop watches. The loop thread drains the done list and calls back.
 * The threads touch nothing but their job, the two lists (under the mutex)
 * and the eventfd: no logging (log_q() is not thread-safe), no bus, no
 * Redis. A dummy verification checks the password against a hash of random
 * bytes made at start, with the default parameters, so that an unknown
 * account costs what a known one costs. A job that asks for a rehash also
 * hashes the password anew after a match, on the same thread, so that the
 * loop never runs scrypt and the password is never copied out of the job.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth.h"
#include "lib/err.h"
#include "lib/passwd.h"
#include "lib/xalloc.h"

struct pool_job {
    struct pool_job *next;
    char *password;
    size_t len;
    char *stored; /* NULL: a dummy run */
    bool rehash;
    char *rehashed; /* the new hash when asked and matched, else NULL */
    int result;
    bool bad_hash;
    auth_pool_fn *fn;
    void *arg;
};

struct pool_list {
    struct pool_job *head, *tail;
};

struct auth_pool {
    loop_t *loop;
    int efd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pool_list waiting, done;
    int nwaiting, queue_max;
    bool stopping;
    pthread_t *threads;
    int nthreads;
    char dummy[PASSWD_MAX];
};

static void
list_push(struct pool_list *l, struct pool_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct pool_job *
list_take_all(struct pool_list *l)
{
    struct pool_job *head = l->head;

    l->head = l->tail = NULL;
    return head;
}

static void
job_free(struct pool_job *j)
{
    OPENSSL_cleanse(j->password, j->len);
    free(j->password);
    if (j->stored) {
        OPENSSL_cleanse(j->stored, strlen(j->stored));
        free(j->stored);
    }
    if (j->rehashed) {
        OPENSSL_cleanse(j->rehashed, PASSWD_MAX);
        free(j->rehashed);
    }
    free(j);
}

/* Runs on a worker thread. */
static void
job_run(auth_pool_t *p, struct pool_job *j)
{
    int rc = 1;

    if (j->stored != NULL) {
        rc = passwd_verify(j->password, j->len, j->stored, NULL, 0);
        /* A hash that cannot be read must cost what a real check does,
         * or it would tell which accounts are broken. */
        if (rc == ERR_MALFORMED) {
            j->bad_hash = true;
            (void)passwd_verify(j->password, j->len, p->dummy, NULL, 0);
        }
    } else {
        (void)passwd_verify(j->password, j->len, p->dummy, NULL, 0);
    }
    /* Anything but a match is a "no" (passwd.h). */
    j->result = rc == 0 ? 0 : 1;
    if (rc == 0 && j->rehash) {
        j->rehashed = xmalloc(PASSWD_MAX);
        if (passwd_hash(j->password, j->len, j->rehashed, PASSWD_MAX) != 0) {
            /* The login stands; the upgrade waits for the next one. */
            OPENSSL_cleanse(j->rehashed, PASSWD_MAX);
            free(j->rehashed);
            j->rehashed = NULL;
        }
    }
    OPENSSL_cleanse(j->password, j->len);
}

static void
wake_loop(auth_pool_t *p)
{
    uint64_t one = 1;

    /* EAGAIN means the counter is full, which still wakes the loop. */
    while (write(p->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void *
worker(void *arg)
{
    auth_pool_t *p = arg;

    for (;;) {
        struct pool_job *j;

        pthread_mutex_lock(&p->mu);
        while (!p->stopping && p->waiting.head == NULL)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        j = p->waiting.head;
        p->waiting.head = j->next;
        if (p->waiting.head == NULL)
            p->waiting.tail = NULL;
        p->nwaiting--;
        pthread_mutex_unlock(&p->mu);

        job_run(p, j);

        pthread_mutex_lock(&p->mu);
        list_push(&p->done, j);
        pthread_mutex_unlock(&p->mu);
        wake_loop(p);
    }
}

/* Calls back and frees a chain of jobs; result < 0 overrides theirs. */
static void
deliver(struct pool_job *j, int result)
{
    while (j) {
        struct pool_job *next = j->next;

        j->fn(j->arg, result < 0 ? result : j->result, j->bad_hash,
              result < 0 ? NULL : j->rehashed);
        job_free(j);
        j = next;
    }
}

static void
on_done(loop_t *loop, int fd, int events, void *arg)
{
    auth_pool_t *p = arg;
    struct pool_job *j;
    uint64_t n;

    (void)loop;
    (void)events;
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&p->mu);
    j = list_take_all(&p->done);
    pthread_mutex_unlock(&p->mu);
    deliver(j, 0);
}

auth_pool_t *
auth_pool_new(loop_t *loop, int threads, int queue_max, char *why,
              size_t whylen)
{
    auth_pool_t *p = xcalloc(1, sizeof(*p));
    unsigned char secret[32];
    int rc;

    p->loop = loop;
    p->queue_max = queue_max;
    p->efd = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    /* The dummy hash: of 32 random bytes that nobody knows, thrown away. */
    if (RAND_bytes(secret, sizeof(secret)) != 1 ||
        passwd_hash((const char *)secret, sizeof(secret), p->dummy,
                    sizeof(p->dummy)) != 0) {
        OPENSSL_cleanse(secret, sizeof(secret));
        snprintf(why, whylen, "cannot make the dummy hash (OpenSSL)");
        goto fail;
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0 || loop_fd_add(loop, p->efd, LOOP_READ, on_done, p) != 0) {
        snprintf(why, whylen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    p->threads = xcalloc((size_t)threads, sizeof(*p->threads));
    for (; p->nthreads < threads; p->nthreads++) {
        rc = pthread_create(&p->threads[p->nthreads], NULL, worker, p);
        if (rc != 0) {
            snprintf(why, whylen, "pthread_create: %s", strerror(rc));
            goto fail;
        }
    }
    return p;
fail:
    auth_pool_destroy(&p);
    return NULL;
}

void
auth_pool_destroy(auth_pool_t **pool_p)
{
    auth_pool_t *p = *pool_p;
    struct pool_job *done, *waiting;

    if (p == NULL)
        return;
    *pool_p = NULL;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    /* No thread is left: the lists are ours without the lock. */
    done = list_take_all(&p->done);
    waiting = list_take_all(&p->waiting);
    if (p->efd >= 0) {
        loop_fd_del(p->loop, p->efd);
        close(p->efd);
    }
    deliver(done, 0);
    deliver(waiting, ERR_CLOSED);
    OPENSSL_cleanse(p->dummy, sizeof(p->dummy));
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int
auth_pool_submit(auth_pool_t *pool, const char *password, size_t len,
                 const char *stored, bool rehash, auth_pool_fn *fn, void *arg)
{
    struct pool_job *j;

    pthread_mutex_lock(&pool->mu);
    if (pool->nwaiting >= pool->queue_max) {
        pthread_mutex_unlock(&pool->mu);
        return ERR_TOO_BIG;
    }
    pthread_mutex_unlock(&pool->mu);
    /* Copies are made outside the lock; only this thread adds jobs, so
     * the room seen above is still there. */
    j = xcalloc(1, sizeof(*j));
    j->password = xmalloc(len + 1);
    memcpy(j->password, password, len);
    j->password[len] = '\0';
    j->len = len;
    j->stored = stored ? xstrdup(stored) : NULL;
    j->rehash = rehash && stored != NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&pool->mu);
    list_push(&pool->waiting, j);
    pool->nwaiting++;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

int
auth_pool_waiting(const auth_pool_t *pool)
{
    int n;

    pthread_mutex_lock((pthread_mutex_t *)&pool->mu);
    n = pool->nwaiting;
    pthread_mutex_unlock((pthread_mutex_t *)&pool->mu);
    return n;
}
