/*
 * mailbox_main.c - samotop-mailbox: the mail store (Maildir), IMAP and LMTP.
 *
 * The skeleton (bus/actor.c) registers the "mailbox" service on the bus and
 * answers mailbox.ping; the handler table below lists every other envelope
 * type this actor takes.
 */
#include "actor.h"

#include "mailbox.h"
#include "mailbox_metrics.h"

static const struct handler mailbox_handlers[] = {
    {ENV_MAILBOX_DELIVER, mailbox_on_deliver}, /* from listener, queue */
    {ENV_MAILBOX_TICKET, mailbox_on_ticket},   /* from other mailbox copies */
    {ENV_NONE, NULL}
};

/* The metrics first, so that every part of the actor finds them. */
static int
mailbox_main_init(actor_t *a)
{
    mailbox_metrics_init(actor_metrics(a));
    return mailbox_init(a);
}

int
main(int argc, char **argv)
{
    return actor_main(argc, argv, &(struct actor_desc){
        .name = "mailbox", .handlers = mailbox_handlers,
        .init = mailbox_main_init, .fini = mailbox_fini});
}
