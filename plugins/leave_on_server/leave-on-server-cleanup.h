#ifndef LEAVE_ON_SERVER_CLEANUP_H
#define LEAVE_ON_SERVER_CLEANUP_H

struct leave_on_server_user;

/* After a POP3 session's QUIT: expunges (or moves) what the expire or
   quota policy says may go. Only messages that the registered devices
   have retrieved are ever candidates. Returns 0, or -1 after logging. */
int leave_on_server_cleanup(struct leave_on_server_user *luser);

#endif
