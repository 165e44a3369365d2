/*
 * mailbox_imap_notify.c - unsolicited updates: one inotify descriptor for
 * the process, on the actor's loop, watching the new/ and cur/ of every
 * folder some session has selected, so that a delivery, another session
 * or a Maildir tool changing the folder is seen at once.
 *
 * A folder is watched once, however many sessions selected it (a count).
 * Events are gathered for a few milliseconds (a delivery of many messages
 * is one wake-up), then each session of a changed folder that is in IDLE
 * syncs and is told (RFC 2177); the others sync at their next command.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "mailbox_imap_int.h"

/* Events of one burst are gathered this long before sessions are told. */
#define NOTE_DELAY_MS 20

/* What changes a folder: a file arriving (delivery, APPEND, COPY), going
 * (EXPUNGE, a move to cur/) or renamed (flags). */
#define NOTE_MASK                                                              \
    (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR |        \
     IN_EXCL_UNLINK)

struct inote {
    struct inote *next;
    char *dir;
    /* The directories watched: a folder deleted and made again under the
     * same name is other directories, and gets a watch of its own (the
     * old ones may live on while a session still has them open). */
    dev_t dev;
    ino_t ino_new, ino_cur;
    int wd_new, wd_cur;
    int users;
    bool changed;
};

static void
on_note_timer(loop_t *loop, void *arg)
{
    mbimap_t *im = arg;
    struct isess *s, *next;

    (void)loop;
    im->note_timer = NULL;
    for (s = im->head; s; s = next) {
        next = s->next;
        if (s->note == NULL || !s->note->changed)
            continue;
        /* Only a session in IDLE may be written to now: another learns
         * of it at its next command (RFC 3501 5.2 lets the server wait,
         * and an EXPUNGE could not go out anyway). */
        if (imap_server_idling(s->srv) && s->calls == 0 && s->work == NULL) {
            imap_cmd_sync(s);
            imap_sess_pump(s); /* may free s: next was taken before */
        }
    }
    for (struct inote *n = im->notes; n; n = n->next)
        n->changed = false;
}

static void
on_inotify(loop_t *loop, int fd, int events, void *arg)
{
    mbimap_t *im = arg;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;

    (void)events;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const void *)p;

            for (struct inote *no = im->notes; no; no = no->next)
                if (ev->wd == no->wd_new || ev->wd == no->wd_cur) {
                    no->changed = true;
                    any = true;
                    /* The directory went (DELETE, RENAME): its watch is
                     * gone too, and is made again when the folder is
                     * selected next. */
                    if (ev->mask & IN_IGNORED) {
                        if (ev->wd == no->wd_new)
                            no->wd_new = -1;
                        else
                            no->wd_cur = -1;
                    }
                }
            /* IN_Q_OVERFLOW: events were lost; every folder may have
             * changed. */
            if (ev->mask & IN_Q_OVERFLOW) {
                for (struct inote *no = im->notes; no; no = no->next)
                    no->changed = true;
                any = true;
            }
            p += sizeof(*ev) + ev->len;
        }
    }
    if (any && im->note_timer == NULL)
        im->note_timer = loop_timer_add(loop, NOTE_DELAY_MS, on_note_timer, im);
}

int
imap_notify_start(mbimap_t *im)
{
    im->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (im->ino_fd < 0) {
        log_err(NULL, "inotify_failed", "reason=%s", log_q(strerror(errno)));
        return ERR_SYS;
    }
    if (loop_fd_add(im->loop, im->ino_fd, LOOP_READ, on_inotify, im) != 0) {
        close(im->ino_fd);
        im->ino_fd = -1;
        return ERR_SYS;
    }
    return 0;
}

void
imap_notify_stop(mbimap_t *im)
{
    loop_timer_cancel(im->loop, &im->note_timer);
    while (im->notes) {
        struct inote *n = im->notes;

        im->notes = n->next;
        free(n->dir);
        free(n);
    }
    if (im->ino_fd >= 0) {
        loop_fd_del(im->loop, im->ino_fd);
        close(im->ino_fd); /* the watches go with it */
        im->ino_fd = -1;
    }
}

static int
add_watch(mbimap_t *im, const char *dir, const char *sub)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    return inotify_add_watch(im->ino_fd, path, NOTE_MASK);
}

static void
release(mbimap_t *im, struct inote *n)
{
    struct inote **pp;

    if (--n->users > 0)
        return;
    for (pp = &im->notes; *pp != n; pp = &(*pp)->next)
        ;
    *pp = n->next;
    /* Two of these never share a watch descriptor: inotify gives the
     * same one for the same directory, and each directory is watched by
     * one of them (below). */
    if (n->wd_new >= 0)
        inotify_rm_watch(im->ino_fd, n->wd_new);
    if (n->wd_cur >= 0)
        inotify_rm_watch(im->ino_fd, n->wd_cur);
    free(n->dir);
    free(n);
}

/* The identity of dir's new/ and cur/ (zeros for one that is not there). */
static void
ident(const char *dir, dev_t *dev, ino_t *ino_new, ino_t *ino_cur)
{
    char path[PATH_MAX];
    struct stat st;

    *dev = 0;
    *ino_new = *ino_cur = 0;
    snprintf(path, sizeof(path), "%s/new", dir);
    if (stat(path, &st) == 0) {
        *dev = st.st_dev;
        *ino_new = st.st_ino;
    }
    snprintf(path, sizeof(path), "%s/cur", dir);
    if (stat(path, &st) == 0)
        *ino_cur = st.st_ino;
}

void
imap_notify_follow(struct isess *s, const char *dir)
{
    mbimap_t *im = s->im;
    struct inote *n;
    dev_t dev;
    ino_t ino_new, ino_cur;

    if (s->note) {
        release(im, s->note);
        s->note = NULL;
    }
    if (dir == NULL || *dir == '\0' || im->ino_fd < 0)
        return;
    ident(dir, &dev, &ino_new, &ino_cur);
    for (n = im->notes; n; n = n->next)
        if (strcmp(n->dir, dir) == 0 && n->dev == dev &&
            n->ino_new == ino_new && n->ino_cur == ino_cur)
            break;
    if (n == NULL) {
        n = xcalloc(1, sizeof(*n));
        n->dir = xstrdup(dir);
        n->dev = dev;
        n->ino_new = ino_new;
        n->ino_cur = ino_cur;
        n->wd_new = n->wd_cur = -1;
        n->next = im->notes;
        im->notes = n;
    }
    /* New, or its directories were made again since they went. */
    if (n->wd_new < 0)
        n->wd_new = add_watch(im, dir, "new");
    if (n->wd_cur < 0)
        n->wd_cur = add_watch(im, dir, "cur");
    if (n->wd_new < 0 || n->wd_cur < 0)
        log_warn(s->trace, "inotify_watch_failed", "dir=%s reason=%s",
                 log_q(dir), log_q(strerror(errno)));
    n->users++;
    s->note = n;
}
