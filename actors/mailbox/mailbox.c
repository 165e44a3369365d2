#include <stdlib.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "mailbox.h"

int
mailbox_init(actor_t *a)
{
    const config_t *cfg = actor_config(a);
    struct mailbox *mb = xcalloc(1, sizeof(*mb));
    char why[512];

    mb->store = maildir_new(config_str(cfg, "data"),
                            config_str(cfg, "hostname"), why, sizeof(why));
    if (mb->store == NULL) {
        log_err(NULL, "store_unusable", "reason=%s", log_q(why));
        free(mb);
        return ERR_SYS;
    }
    actor_set_data(a, mb);
    return 0;
}

void
mailbox_fini(actor_t *a)
{
    struct mailbox *mb = actor_data(a);

    if (mb == NULL)
        return;
    log_info(NULL, "store_closed",
             "delivered=%llu deferred=%llu refused=%llu bad_requests=%llu",
             (unsigned long long)mb->delivered,
             (unsigned long long)mb->deferred, (unsigned long long)mb->refused,
             (unsigned long long)mb->bad_requests);
    maildir_destroy(&mb->store);
    free(mb);
    actor_set_data(a, NULL);
}
