#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/shard.h"
#include "lib/xalloc.h"

#include "mailbox.h"

/* Which accounts this process owns; a sharded mailbox registers as
 * "mailbox.K" so that callers reach the owner of each account. */
static int
set_shard(actor_t *a, struct mailbox *mb)
{
    const config_t *cfg = actor_config(a);
    const char *slash = strchr(actor_name(a), '/');
    char service[64];

    mb->nshards = shard_mailbox_count(cfg);
    mb->shard = 0;
    if (mb->nshards == 1)
        return 0;
    mb->shard = shard_mailbox_index(cfg, slash ? slash + 1 : NULL);
    if (mb->shard < 0 ||
        shard_service(service, sizeof(service), "mailbox", mb->shard,
                      mb->nshards) == NULL ||
        actor_set_service(a, service) != 0) {
        log_err(NULL, "shard_unknown",
                "shards=%d reason=\"set mailbox.shard (0..shards-1) or run "
                "as instance 1..N\"",
                mb->nshards);
        return ERR_CONFIG;
    }
    log_info(NULL, "mailbox_shard", "shard=%d shards=%d service=%s",
             mb->shard, mb->nshards, service);
    return 0;
}

int
mailbox_init(actor_t *a)
{
    const config_t *cfg = actor_config(a);
    struct mailbox *mb = xcalloc(1, sizeof(*mb));
    char why[512];

    /* The store keeps recently used mailboxes' directories open (two
     * fds each), and each IMAP or LMTP session holds one. */
    net_raise_nofile();
    mb->actor = a;
    if (set_shard(a, mb) != 0) {
        free(mb);
        return ERR_CONFIG;
    }
    mb->store = maildir_new(config_str(cfg, "data"),
                            config_str(cfg, "hostname"), why, sizeof(why));
    if (mb->store == NULL) {
        log_err(NULL, "store_unusable", "reason=%s", log_q(why));
        free(mb);
        return ERR_SYS;
    }
    mb->quota = mailbox_quota_new(actor_loop(a), cfg);
    actor_set_data(a, mb);
    mb->imap = mailbox_imap_start(mb);
    mb->lmtp = mb->imap ? mailbox_lmtp_start(mb) : NULL;
    if (mb->imap == NULL || mb->lmtp == NULL) {
        mailbox_fini(a);
        return ERR_SYS;
    }
    return 0;
}

void
mailbox_fini(actor_t *a)
{
    struct mailbox *mb = actor_data(a);

    if (mb == NULL)
        return;
    /* IMAP sessions say BYE and go first: they use the quota. */
    mailbox_imap_stop(&mb->imap);
    /* LMTP sessions store what they hold and say 421. */
    mailbox_lmtp_stop(&mb->lmtp);
    /* The loop has stopped; the requests parked are stored and answered
     * before the bus worker goes. */
    /* Messages still waiting for their quota lookup are parked unchecked
     * (the lookups fail with ERR_CLOSED), then stored with the others. */
    mailbox_quota_destroy(&mb->quota);
    loop_timer_cancel(actor_loop(a), &mb->commit_timer);
    mailbox_deliver_flush(mb);
    log_info(
        NULL, "store_closed",
        "delivered=%llu deferred=%llu refused=%llu bad_requests=%llu "
        "commits=%llu requests=%llu",
        (unsigned long long)mb->delivered, (unsigned long long)mb->deferred,
        (unsigned long long)mb->refused, (unsigned long long)mb->bad_requests,
        (unsigned long long)mb->commits, (unsigned long long)mb->committed);
    maildir_destroy(&mb->store);
    free(mb);
    actor_set_data(a, NULL);
}
