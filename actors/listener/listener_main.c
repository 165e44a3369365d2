/*
 * listener_main.c - samotop-listener: SMTP sessions in the MTA, MSA and SMTPS roles; a bus client of guard, auth, mailbox and queue. The SMTP engine comes with the inbound issue.
 *
 * The skeleton (bus/actor.c) registers the "listener" service on the bus and
 * answers listener.ping; the handler table below lists every other envelope
 * type this actor takes.
 */
#include "actor.h"

static const struct handler listener_handlers[] = {
    {ENV_NONE, NULL}
};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv, &(struct actor_desc){
        .name = "listener", .handlers = listener_handlers});
}
