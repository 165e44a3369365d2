/*
 * auth_main.c - samotop-auth: credential checks (SASL) against the accounts in Redis, and auth throttling.
 *
 * The skeleton (bus/actor.c) registers the "auth" service on the bus and
 * answers auth.ping; the handler table below lists every other envelope
 * type this actor takes.
 */
#include "actor.h"

static const struct handler auth_handlers[] = {
    {ENV_NONE, NULL}
};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv, &(struct actor_desc){
        .name = "auth", .handlers = auth_handlers});
}
