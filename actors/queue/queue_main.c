/*
 * queue_main.c - samotop-queue: the outbound queue in Redis: scheduling,
 * retries, bounces.
 *
 * The skeleton (bus/actor.c) registers the "queue" service on the bus and
 * answers queue.ping; the handler table below lists every other envelope
 * type this actor takes. The work is in queue_submit.c (taking messages
 * in) and queue_sched.c (delivering them).
 */
#include "queue.h"

static const struct handler queue_handlers[] = {
    {ENV_QUEUE_SUBMIT, queue_on_submit}, /* from listener */
    {ENV_NONE, NULL}};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv,
                      &(struct actor_desc){.name = "queue",
                                           .handlers = queue_handlers,
                                           .init = queue_init,
                                           .fini = queue_fini,
                                           .ready = queue_ready});
}
