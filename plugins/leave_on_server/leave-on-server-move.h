#ifndef LEAVE_ON_SERVER_MOVE_H
#define LEAVE_ON_SERVER_MOVE_H

struct mail;
struct leave_on_server_user;

/* leave_on_server_move_to: copies mail to that mailbox (created on first
   use) in a transaction that must be committed before the expunge is,
   so that a crash in between leaves a copy too many, never one too
   few. Returns 0, or -1 with the storage error logged. */
int leave_on_server_move_copy(struct leave_on_server_user *luser,
			      struct mail *mail);
/* Commits the copies made so far; -1 if that failed or a copy failed,
   and then the expunges must not be committed. */
int leave_on_server_move_commit(struct leave_on_server_user *luser);
void leave_on_server_move_rollback(struct leave_on_server_user *luser);

#endif
