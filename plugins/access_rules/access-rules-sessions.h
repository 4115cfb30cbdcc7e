#ifndef ACCESS_RULES_SESSIONS_H
#define ACCESS_RULES_SESSIONS_H

#include "access-rules.h"

/* Live sessions of one user, counted across processes. Each session
   holds an flock() on a file of its own in the user's session
   directory; the kernel drops the lock when the process dies, so a
   crashed session stops counting without any cleanup. */

struct access_rules_session_slot;

struct access_rules_session_counts {
	/* including the session being registered */
	unsigned int total;
	unsigned int protocol[ACCESS_RULE_PROTOCOL_COUNT];
};

/* Registers a session of protocol in dir and counts the live ones.
   Returns 0 on success, -1 with error_r. */
int access_rules_sessions_register(const char *dir,
				   enum access_rule_protocol protocol,
				   struct access_rules_session_slot **slot_r,
				   struct access_rules_session_counts *counts_r,
				   const char **error_r);
/* Ends the session's registration. */
void access_rules_sessions_unregister(struct access_rules_session_slot **slot);

#endif
