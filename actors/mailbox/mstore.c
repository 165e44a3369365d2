/* XXX: a stub while the store is written: every call fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

#include "mstore.h"

struct mstore {
    int unused;
};

mstore_t *
mstore_open(const char *data_dir, const char *mailbox,
            const struct mstore_limits *lim, char *why, size_t whylen)
{
    (void)data_dir, (void)mailbox, (void)lim;
    snprintf(why, whylen, "not written yet");
    return NULL;
}

void mstore_destroy(mstore_t **ms_p) { (void)ms_p; }
void mstore_set_trace(mstore_t *ms, const char *trace) { (void)ms, (void)trace; }
const char *mstore_err_code(const mstore_t *ms) { (void)ms; return "SERVERBUG"; }
const char *mstore_err_text(const mstore_t *ms) { (void)ms; return "not written yet"; }
int64_t mstore_bytes_delta(const mstore_t *ms) { (void)ms; return 0; }
bool mstore_name_ok(const mstore_t *ms, const char *name, const char **why) { (void)ms, (void)name; if (why) *why = "stub"; return false; }
int mstore_list(mstore_t *ms, const char *ref, const char *pattern, bool lsub, mstore_list_fn *fn, void *arg) { (void)ms, (void)ref, (void)pattern, (void)lsub, (void)fn, (void)arg; return ERR_SYS; }
int mstore_create(mstore_t *ms, const char *name) { (void)ms, (void)name; return ERR_SYS; }
int mstore_delete(mstore_t *ms, const char *name) { (void)ms, (void)name; return ERR_SYS; }
int mstore_rename(mstore_t *ms, const char *from, const char *to) { (void)ms, (void)from, (void)to; return ERR_SYS; }
int mstore_subscribe(mstore_t *ms, const char *name, bool on) { (void)ms, (void)name, (void)on; return ERR_SYS; }
int mstore_status(mstore_t *ms, const char *name, struct imap_status_values *v) { (void)ms, (void)name, (void)v; return ERR_SYS; }
int mstore_append(mstore_t *ms, const char *folder, const void *data, size_t len, const char *const *flags, size_t nflags, time_t date, struct mstore_copied *out) { (void)ms, (void)folder, (void)data, (void)len, (void)flags, (void)nflags, (void)date, (void)out; return ERR_SYS; }
mstore_view_t *mstore_select(mstore_t *ms, const char *name, bool read_only) { (void)ms, (void)name, (void)read_only; return NULL; }
void mstore_view_destroy(mstore_view_t **v_p) { (void)v_p; }
const char *mstore_view_name(const mstore_view_t *v) { (void)v; return ""; }
bool mstore_view_read_only(const mstore_view_t *v) { (void)v; return true; }
uint32_t mstore_view_exists(const mstore_view_t *v) { (void)v; return 0; }
uint32_t mstore_view_recent(const mstore_view_t *v) { (void)v; return 0; }
uint32_t mstore_view_uidvalidity(const mstore_view_t *v) { (void)v; return 0; }
uint32_t mstore_view_uidnext(const mstore_view_t *v) { (void)v; return 0; }
uint32_t mstore_view_first_unseen(const mstore_view_t *v) { (void)v; return 0; }
const char *mstore_view_flag_list(mstore_view_t *v) { (void)v; return ""; }
const char *mstore_view_permanent_flags(mstore_view_t *v) { (void)v; return ""; }
const char *mstore_view_keyword(const mstore_view_t *v, unsigned i) { (void)v, (void)i; return NULL; }
const struct mstore_msg *mstore_view_msg(const mstore_view_t *v, uint32_t seq) { (void)v, (void)seq; return NULL; }
uint32_t mstore_view_seq(const mstore_view_t *v, uint32_t uid) { (void)v, (void)uid; return 0; }
const char *mstore_view_flags_str(mstore_view_t *v, uint32_t seq) { (void)v, (void)seq; return ""; }
const char *mstore_view_path(const mstore_view_t *v) { (void)v; return ""; }
int mstore_view_sync(mstore_view_t *v, unsigned opts, struct mstore_changes *ch) { (void)v, (void)opts; memset(ch, 0, sizeof(*ch)); return ERR_SYS; }
int mstore_view_resolve(mstore_view_t *v, const struct imap_seqset *set, bool uid, const uint32_t **seqs, size_t *n) { (void)v, (void)set, (void)uid; *seqs = NULL; *n = 0; return ERR_SYS; }
int mstore_store(mstore_view_t *v, const struct imap_seqset *set, bool uid, enum imap_store_op op, const char *const *flags, size_t nflags, const uint32_t **seqs, size_t *n) { (void)v, (void)set, (void)uid, (void)op, (void)flags, (void)nflags; *seqs = NULL; *n = 0; return ERR_SYS; }
int mstore_view_set_seen(mstore_view_t *v, const uint32_t *seqs, size_t n, const uint32_t **changed, size_t *nchanged) { (void)v, (void)seqs, (void)n; *changed = NULL; *nchanged = 0; return ERR_SYS; }
int mstore_copy(mstore_view_t *v, const struct imap_seqset *set, bool uid, const char *dest, struct mstore_copied *out) { (void)v, (void)set, (void)uid, (void)dest, (void)out; return ERR_SYS; }
int mstore_move(mstore_view_t *v, const struct imap_seqset *set, bool uid, const char *dest, struct mstore_copied *out, const uint32_t **expunged, size_t *nexpunged) { (void)v, (void)set, (void)uid, (void)dest, (void)out; *expunged = NULL; *nexpunged = 0; return ERR_SYS; }
int mstore_expunge(mstore_view_t *v, const struct imap_seqset *uids, const uint32_t **expunged, size_t *nexpunged) { (void)v, (void)uids; *expunged = NULL; *nexpunged = 0; return ERR_SYS; }
int mstore_map(mstore_view_t *v, uint32_t seq, struct mstore_map *m) { (void)v, (void)seq; memset(m, 0, sizeof(*m)); return ERR_SYS; }
void mstore_unmap(struct mstore_map *m) { (void)m; }
int mstore_open_msg(mstore_view_t *v, uint32_t seq, int *fd) { (void)v, (void)seq; *fd = -1; return ERR_SYS; }
