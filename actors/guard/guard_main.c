/*
 * guard_main.c - samotop-guard: recipient and sender policy: local domains,
 * accounts, aliases, rate limits.
 *
 * The skeleton (bus/actor.c) registers the "guard" service on the bus and
 * answers guard.ping; the handler table below lists every other envelope
 * type this actor takes. The work is in guard_handlers.c (Redis) and
 * guard_resolve.c (the rules).
 */
#include "guard.h"

static const struct handler guard_handlers[] = {
    {ENV_GUARD_CONNECT, guard_on_connect}, /* from listener, per session */
    {ENV_GUARD_MAIL, guard_on_mail},       /* from listener, at MAIL */
    {ENV_GUARD_RCPT, guard_on_rcpt},       /* from listener, at RCPT */
    {ENV_NONE, NULL}};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv,
                      &(struct actor_desc){.name = "guard",
                                           .handlers = guard_handlers,
                                           .init = guard_init,
                                           .fini = guard_fini,
                                           .ready = guard_ready});
}
