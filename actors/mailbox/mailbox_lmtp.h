/*
 * mailbox_lmtp.h - the mailbox actor's LMTP door (RFC 2033) on listen.lmtp:
 * another MTA (Postfix's lmtp(8), the queue) hands over mail for our
 * accounts, and learns per recipient whether its copy is on disk.
 *
 * mailbox_lmtp_start() binds the door on the actor's loop and owns every
 * LMTP session from then on; mailbox_lmtp_stop() answers each with 421,
 * closes them and the door, and frees all of it. A session joins the ESMTP
 * engine in LMTP mode (lib/smtp_server.h) to a plaintext socket, asks the
 * guard over the bus whether each recipient is ours (guard.rcpt, with the
 * session's trace id), and stores the message through the mailbox's own
 * group commit (mailbox_deliver_park()); copies for accounts another shard
 * owns go to it as mailbox.deliver, an alias's remote addresses to the
 * queue as queue.submit. The door is for loopback and internal networks
 * only: it has no TLS and no authentication.
 */
#ifndef SAMOTOP_MAILBOX_LMTP_H
#define SAMOTOP_MAILBOX_LMTP_H

struct mailbox;
typedef struct mblmtp mblmtp_t;

/* Binds listen.lmtp and starts serving; NULL when the door cannot be had
 * (the reason is logged), which stops start-up. Caller owns the result. */
mblmtp_t *mailbox_lmtp_start(struct mailbox *mb);

/* Closes every session (421 first) and the door, then frees; NULL is
 * fine, and *lm_p is nulled. A delivery a session was waiting for is
 * stored first. */
void mailbox_lmtp_stop(mblmtp_t **lm_p);

#endif
