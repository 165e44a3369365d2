/*
 * relay_main.c - samotop-relay: the outbound ESMTP client: routes, MX lookup, delivery to other servers.
 *
 * The skeleton (bus/actor.c) registers the "relay" service on the bus and
 * answers relay.ping; the handler table below lists every other envelope
 * type this actor takes.
 */
#include "actor.h"

static const struct handler relay_handlers[] = {
    {ENV_NONE, NULL}
};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv, &(struct actor_desc){
        .name = "relay", .handlers = relay_handlers});
}
