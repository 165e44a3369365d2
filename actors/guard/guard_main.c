/*
 * guard_main.c - samotop-guard: recipient and sender policy: local domains, accounts, aliases, rate limits.
 *
 * The skeleton (bus/actor.c) registers the "guard" service on the bus and
 * answers guard.ping; the handler table below lists every other envelope
 * type this actor takes.
 */
#include "actor.h"

static const struct handler guard_handlers[] = {
    {ENV_NONE, NULL}
};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv, &(struct actor_desc){
        .name = "guard", .handlers = guard_handlers});
}
