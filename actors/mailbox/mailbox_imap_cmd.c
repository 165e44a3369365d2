/*
 * mailbox_imap_cmd.c - the IMAP commands on folders (RFC 3501 6.3, 6.4 and
 * the extensions offered): each decision of the engine is answered here
 * from the account's store (mstore.h), FETCH and SEARCH in their own files.
 *
 * Before each command in the selected state, and when IDLE is told of a
 * change, the view is synced and what changed is written: expunges only
 * when the engine lets them go out now (RFC 3501 7.4.1), else they wait in
 * the view for a later sync.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "mailbox_imap_int.h"

/* --- helpers ------------------------------------------------------------- */

/* "NO [code] text" from the store's last failure. */
static void
fail_store(struct isess *s, int rc)
{
    const char *code = mstore_err_code(s->ms);
    const char *text = mstore_err_text(s->ms);

    if (code == NULL && rc == ERR_INVAL)
        code = "CANNOT";
    imap_sess_complete(s, IMAP_NO, code,
                       text && *text ? text : "Operation failed");
}

/* A flag list from the store, without the parentheses if it has them. */
static void
flag_list(buf_t *b, const char *list)
{
    size_t n = strlen(list);

    if (n >= 2 && list[0] == '(' && list[n - 1] == ')')
        buf_add(b, list + 1, n - 2);
    else
        buf_add(b, list, n);
}

/* Appends uids[0..n) as an IMAP sequence set with ranges ("1:3,7"). */
static void
uid_set(buf_t *b, const uint32_t *uids, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;

        while (j + 1 < n && uids[j + 1] == uids[j] + 1)
            j++;
        if (i > 0)
            buf_addc(b, ',');
        if (j > i)
            buf_printf(b, "%u:%u", uids[i], uids[j]);
        else
            buf_printf(b, "%u", uids[i]);
        i = j + 1;
    }
}

/* The COPYUID response code (RFC 4315 3) for what was copied, or NULL
 * (nothing copied: no code). Into b. */
static const char *
copyuid(buf_t *b, const struct mstore_copied *cp)
{
    if (cp->n == 0)
        return NULL;
    buf_printf(b, "COPYUID %u ", cp->uidvalidity);
    uid_set(b, cp->src_uids, cp->n);
    buf_addc(b, ' ');
    uid_set(b, cp->dst_uids, cp->n);
    return b->data;
}

static mailbox_quota_t *
quota(struct isess *s)
{
    return s->im->quota;
}

/* Charges or credits the account for what the store's last call added or
 * took away (mailbox_quota.h). */
static void
quota_account(struct isess *s)
{
    int64_t d = mstore_bytes_delta(s->ms);

    if (quota(s) == NULL || d == 0)
        return;
    if (d > 0)
        mailbox_quota_charge(quota(s), s->trace, s->user, (uint64_t)d);
    else
        mailbox_quota_credit(quota(s), s->trace, s->user, (uint64_t)-d);
}

static void
write_fetch_flags(struct isess *s, uint32_t seq, bool uid)
{
    const struct mstore_msg *m = mstore_view_msg(s->view, seq);

    if (m == NULL)
        return;
    imap_server_fetch_begin(s->srv, seq);
    if (uid)
        imap_server_fetch_uid(s->srv, m->uid);
    imap_server_fetch_flags(s->srv, mstore_view_flags_str(s->view, seq));
    imap_server_fetch_end(s->srv);
}

static void
write_expunges(struct isess *s, const uint32_t *seqs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        imap_server_expunge(s->srv, seqs[i]);
}

static void
write_permanent(struct isess *s)
{
    buf_t b = BUF_INIT;

    buf_adds(&b, "PERMANENTFLAGS (");
    flag_list(&b, mstore_view_permanent_flags(s->view));
    buf_addc(&b, ')');
    imap_server_untagged_status(s->srv, IMAP_OK, b.data,
                                mstore_view_read_only(s->view)
                                    ? "No permanent flags permitted"
                                    : "Flags permitted");
    buf_free(&b);
}

static void
write_flags(struct isess *s)
{
    buf_t b = BUF_INIT;

    flag_list(&b, mstore_view_flag_list(s->view));
    imap_server_flags(s->srv, b.data ? b.data : "");
    buf_free(&b);
}

void
imap_cmd_sync(struct isess *s)
{
    struct mstore_changes ch;
    bool hold = !imap_server_expunge_ok(s->srv);
    int rc;

    if (s->view == NULL)
        return;
    rc = mstore_view_sync(s->view, hold ? MSTORE_SYNC_HOLD_EXPUNGES : 0, &ch);
    if (rc != 0) {
        log_warn(s->trace, "imap_sync_failed", "user=%s folder=%s err=%s",
                 log_q(s->user), log_q(mstore_view_name(s->view)),
                 err_name(rc));
        return;
    }
    if (ch.uidvalidity_changed) {
        /* RFC 3501 2.3.1.1: the UIDs the client holds mean nothing now. */
        log_warn(s->trace, "imap_uidvalidity_changed", "user=%s folder=%s",
                 log_q(s->user), log_q(mstore_view_name(s->view)));
        imap_server_close(s->srv, "Mailbox UIDVALIDITY changed, reconnect");
        s->closing = true;
        return;
    }
    write_expunges(s, ch.expunged, ch.nexpunged);
    if (ch.exists_changed) {
        imap_server_exists(s->srv, ch.exists);
        imap_server_recent(s->srv, ch.recent);
    }
    if (ch.keywords_changed) {
        write_flags(s);
        write_permanent(s);
    }
    /* The flags array is the view's: copy before the view is called
     * again. */
    if (ch.nflags > 0) {
        uint32_t *seqs = xmalloc(ch.nflags * sizeof(*seqs));
        size_t n = ch.nflags;

        memcpy(seqs, ch.flags, n * sizeof(*seqs));
        for (size_t i = 0; i < n; i++)
            write_fetch_flags(s, seqs[i], true);
        free(seqs);
    }
}

void
imap_cmd_unselect(struct isess *s)
{
    imap_notify_follow(s, NULL);
    mstore_view_destroy(&s->view);
}

/* --- authenticated state (RFC 3501 6.3) ----------------------------------- */

static void
cmd_select(struct isess *s, const struct imap_cmd *c)
{
    bool ro = c->id == IMAP_CMD_EXAMINE;
    buf_t b = BUF_INIT;
    uint32_t unseen;

    /* RFC 3501 6.3.1: a SELECT while one is selected deselects it first,
     * without expunging. */
    imap_cmd_unselect(s);
    s->view = mstore_select(s->ms, c->mailbox, ro);
    if (s->view == NULL) {
        fail_store(s, ERR_INVAL);
        return;
    }
    write_flags(s);
    imap_server_exists(s->srv, mstore_view_exists(s->view));
    imap_server_recent(s->srv, mstore_view_recent(s->view));
    unseen = mstore_view_first_unseen(s->view);
    if (unseen > 0) {
        buf_printf(&b, "UNSEEN %u", unseen);
        imap_server_untagged_status(s->srv, IMAP_OK, b.data, "First unseen");
        buf_reset(&b);
    }
    write_permanent(s);
    buf_printf(&b, "UIDVALIDITY %u", mstore_view_uidvalidity(s->view));
    imap_server_untagged_status(s->srv, IMAP_OK, b.data, "UIDs valid");
    buf_reset(&b);
    buf_printf(&b, "UIDNEXT %u", mstore_view_uidnext(s->view));
    imap_server_untagged_status(s->srv, IMAP_OK, b.data, "Predicted next UID");
    buf_free(&b);
    imap_notify_follow(s, mstore_view_path(s->view));
    log_debug(s->trace, "imap_select", "folder=%s exists=%u ro=%d",
              log_q(c->mailbox), mstore_view_exists(s->view), (int)ro);
    imap_sess_complete(
        s, IMAP_OK, !ro && mstore_view_read_only(s->view) ? "READ-ONLY" : NULL,
        NULL);
}

static void
list_one(void *arg, const char *name, const char *attrs)
{
    struct isess *s = arg;

    imap_server_list(s->srv, s->cmd->id == IMAP_CMD_LSUB, attrs, '/', name);
}

static void
cmd_status(struct isess *s, const struct imap_cmd *c)
{
    struct imap_status_values v;
    int rc = mstore_status(s->ms, c->status.mailbox, &v);

    if (rc != 0) {
        fail_store(s, rc);
        return;
    }
    imap_server_status(s->srv, c->status.mailbox, c->status.items, &v);
    imap_sess_complete(s, IMAP_OK, NULL, NULL);
}

static void
append_store(struct isess *s)
{
    const struct imap_cmd *c = s->cmd;
    struct mstore_copied out;
    buf_t b = BUF_INIT;
    int rc;

    memset(&out, 0, sizeof(out));
    rc = mstore_append(s->ms, c->append.mailbox, c->append.msg, c->append.len,
                       c->append.flags.v, c->append.flags.n,
                       c->append.has_date ? c->append.date : 0, &out);
    if (rc != 0) {
        fail_store(s, rc);
        return;
    }
    quota_account(s);
    /* RFC 3501 6.3.11: the selected folder's new message is told. */
    if (s->view && strcmp(mstore_view_name(s->view), c->append.mailbox) == 0)
        imap_cmd_sync(s);
    if (out.n > 0)
        buf_printf(&b, "APPENDUID %u %u", out.uidvalidity, out.dst_uids[0]);
    imap_sess_complete(s, IMAP_OK, b.len ? b.data : NULL, "APPEND completed");
    buf_free(&b);
}

static void
on_append_quota(void *arg, int err, const struct mailbox_quota_state *st)
{
    struct isess *s = arg;

    s->quota_wait = false;
    if (!imap_sess_call_end(s))
        return;
    if (err == 0 && !st->fits) {
        log_info(s->trace, "imap_over_quota", "user=%s used=%llu limit=%llu",
                 log_q(s->user), (unsigned long long)st->used,
                 (unsigned long long)st->limit);
        /* RFC 9208 4.3. */
        imap_sess_complete(s, IMAP_NO, "OVERQUOTA", "Mailbox is full");
    } else {
        append_store(s);
    }
    imap_sess_pump(s);
}

static void
cmd_append(struct isess *s, const struct imap_cmd *c)
{
    /* The quota is checked first; when it cannot be (Redis away), the
     * message is stored anyway: mailbox_quota.h fails open. */
    if (quota(s)) {
        imap_sess_call_begin(s);
        s->quota_wait = true;
        if (mailbox_quota_check(quota(s), s->user, c->append.len,
                                on_append_quota, s) == 0)
            return;
        s->quota_wait = false;
        s->calls--;
    }
    append_store(s);
}

static void
cmd_id(struct isess *s)
{
    static const char *const params[] = {"name", "Samotop", "vendor",
                                         "Samotop"};

    imap_server_id(s->srv, params, 4);
    imap_sess_complete(s, IMAP_OK, NULL, NULL);
}

/* --- selected state (RFC 3501 6.4) ---------------------------------------- */

static void
cmd_expunge(struct isess *s, const struct imap_cmd *c, bool silent)
{
    const uint32_t *seqs;
    size_t n;
    int rc;

    if (mstore_view_read_only(s->view)) {
        if (silent)
            return;
        imap_sess_complete(s, IMAP_NO, "READ-ONLY", "Mailbox is read-only");
        return;
    }
    rc = mstore_expunge(s->view, c && c->uid ? &c->expunge.set : NULL, &seqs,
                        &n);
    if (rc != 0) {
        if (!silent)
            fail_store(s, rc);
        return;
    }
    quota_account(s);
    if (!silent)
        write_expunges(s, seqs, n);
    if (!silent)
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
}

static void
cmd_close(struct isess *s)
{
    /* RFC 3501 6.4.2: \Deleted messages go, silently, unless read-only. */
    if (!mstore_view_read_only(s->view))
        cmd_expunge(s, NULL, true);
    imap_cmd_unselect(s);
    imap_sess_complete(s, IMAP_OK, NULL, NULL);
}

static void
cmd_store(struct isess *s, const struct imap_cmd *c)
{
    const uint32_t *seqs;
    size_t n;
    int rc;

    if (mstore_view_read_only(s->view)) {
        imap_sess_complete(s, IMAP_NO, "READ-ONLY", "Mailbox is read-only");
        return;
    }
    rc = mstore_store(s->view, &c->store.set, c->uid, c->store.op,
                      c->store.flags.v, c->store.flags.n, &seqs, &n);
    if (rc == ERR_INVAL && mstore_err_code(s->ms) == NULL) {
        imap_sess_complete(s, IMAP_BAD, NULL, "Invalid message sequence");
        return;
    }
    if (rc != 0) {
        fail_store(s, rc);
        return;
    }
    if (!c->store.silent && n > 0) {
        uint32_t *copy = xmalloc(n * sizeof(*copy));

        memcpy(copy, seqs, n * sizeof(*copy));
        for (size_t i = 0; i < n; i++)
            write_fetch_flags(s, copy[i], c->uid);
        free(copy);
    }
    imap_sess_complete(s, IMAP_OK, NULL, NULL);
}

static void
cmd_copy(struct isess *s, const struct imap_cmd *c)
{
    struct mstore_copied out;
    buf_t b = BUF_INIT;
    const uint32_t *exp;
    size_t nexp = 0;
    int rc;

    memset(&out, 0, sizeof(out));
    if (c->id == IMAP_CMD_MOVE && mstore_view_read_only(s->view)) {
        imap_sess_complete(s, IMAP_NO, "READ-ONLY", "Mailbox is read-only");
        return;
    }
    if (c->id == IMAP_CMD_MOVE)
        rc = mstore_move(s->view, &c->copy.set, c->uid, c->copy.mailbox, &out,
                         &exp, &nexp);
    else
        rc = mstore_copy(s->view, &c->copy.set, c->uid, c->copy.mailbox, &out);
    if (rc == ERR_INVAL && mstore_err_code(s->ms) == NULL) {
        imap_sess_complete(s, IMAP_BAD, NULL, "Invalid message sequence");
        return;
    }
    if (rc != 0) {
        fail_store(s, rc);
        return;
    }
    quota_account(s);
    copyuid(&b, &out);
    if (c->id == IMAP_CMD_MOVE) {
        uint32_t *copy = nexp ? xmalloc(nexp * sizeof(*copy)) : NULL;

        /* RFC 6851 4.3: COPYUID in an untagged OK, then the expunges. */
        if (nexp)
            memcpy(copy, exp, nexp * sizeof(*copy));
        if (b.len)
            imap_server_untagged_status(s->srv, IMAP_OK, b.data, "Moved");
        write_expunges(s, copy, nexp);
        free(copy);
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
    } else {
        imap_sess_complete(s, IMAP_OK, b.len ? b.data : NULL, NULL);
    }
    buf_free(&b);
}

/* --- dispatch ------------------------------------------------------------ */

static void
simple(struct isess *s, int rc)
{
    if (rc != 0)
        fail_store(s, rc);
    else
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
}

void
imap_cmd_run(struct isess *s, const struct imap_cmd *c)
{
    int rc;

    if (c->id == IMAP_CMD_ID) {
        cmd_id(s);
        return;
    }
    if (s->ms == NULL) {
        imap_sess_complete(s, IMAP_NO, "UNAVAILABLE", "No store");
        return;
    }
    /* Updates come before a command's own responses; IDLE sends them
     * once it runs. */
    if (s->view && c->id != IMAP_CMD_SELECT && c->id != IMAP_CMD_EXAMINE)
        imap_cmd_sync(s);
    if (s->closing)
        return;
    switch (c->id) {
    case IMAP_CMD_SELECT:
    case IMAP_CMD_EXAMINE:
        cmd_select(s, c);
        return;
    case IMAP_CMD_CREATE:
        simple(s, mstore_create(s->ms, c->mailbox));
        return;
    case IMAP_CMD_DELETE:
        if (s->view && strcmp(mstore_view_name(s->view), c->mailbox) == 0) {
            imap_sess_complete(s, IMAP_NO, "CANNOT",
                               "Cannot delete the selected mailbox");
            return;
        }
        rc = mstore_delete(s->ms, c->mailbox);
        if (rc == 0) {
            quota_account(s);
            /* Deliveries must not follow the folder's directories. */
            maildir_forget(s->im->mb->store, s->user);
        }
        simple(s, rc);
        return;
    case IMAP_CMD_RENAME:
        rc = mstore_rename(s->ms, c->rename.from, c->rename.to);
        if (rc == 0) /* as for DELETE: the old name is made afresh */
            maildir_forget(s->im->mb->store, s->user);
        simple(s, rc);
        return;
    case IMAP_CMD_SUBSCRIBE:
    case IMAP_CMD_UNSUBSCRIBE:
        simple(s, mstore_subscribe(s->ms, c->mailbox,
                                   c->id == IMAP_CMD_SUBSCRIBE));
        return;
    case IMAP_CMD_LIST:
    case IMAP_CMD_LSUB:
        rc = mstore_list(s->ms, c->list.ref, c->list.pattern,
                         c->id == IMAP_CMD_LSUB, list_one, s);
        simple(s, rc);
        return;
    case IMAP_CMD_STATUS:
        cmd_status(s, c);
        return;
    case IMAP_CMD_APPEND:
        cmd_append(s, c);
        return;
    case IMAP_CMD_IDLE:
    case IMAP_CMD_NOOP:
    case IMAP_CMD_CHECK:
        /* The updates were written above (RFC 3501 6.1.2, 6.4.1). */
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
        return;
    case IMAP_CMD_NAMESPACE:
        /* RFC 2342 5: one personal namespace, "" with "/" . */
        imap_server_namespace(s->srv, "", '/');
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
        return;
    case IMAP_CMD_ENABLE:
        /* RFC 5161 3.1: none of what is offered here can be enabled. */
        imap_server_enabled(s->srv, NULL, 0);
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
        return;
    case IMAP_CMD_CLOSE:
        cmd_close(s);
        return;
    case IMAP_CMD_UNSELECT:
        /* RFC 3691 2: as CLOSE, but no message is expunged. */
        imap_cmd_unselect(s);
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
        return;
    case IMAP_CMD_EXPUNGE:
        cmd_expunge(s, c, false);
        return;
    case IMAP_CMD_SEARCH:
        imap_search_run(s, c);
        return;
    case IMAP_CMD_FETCH:
        imap_fetch_start(s, c);
        return;
    case IMAP_CMD_STORE:
        cmd_store(s, c);
        return;
    case IMAP_CMD_COPY:
    case IMAP_CMD_MOVE:
        cmd_copy(s, c);
        return;
    default:
        imap_sess_complete(s, IMAP_BAD, NULL, "Command not served");
        return;
    }
}
