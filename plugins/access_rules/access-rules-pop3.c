/* POP3 glue: a refused session is answered -ERR with its reason in
   place of "+OK Logged in.". */

#include "pop3-common.h"
#include "access-rules-user.h"
#include "access-rules-client.h"

/* present only in the pop3 binary; see access-rules-imap.c */
#pragma weak pop3_client_created_hook_set
#pragma weak client_send_line
#pragma weak client_disconnect

static pop3_client_created_func_t *access_rules_next_hook_client_created;
static bool access_rules_pop3_active = FALSE;

static void access_rules_pop3_client_created(struct client **clientp)
{
	struct client *client = *clientp;
	struct access_rules_user *auser = access_rules_user_get(client->user);

	if (auser != NULL && auser->refusal != NULL) {
		/* RFC 2449's IN-USE for a session cap, RFC 3206's SYS/PERM
		   for a policy that won't change if the client retries.
		   Closing the output now also drops the "+OK Logged in."
		   that the pop3 process would send next. */
		client_send_line(client, "-ERR [%s] %s",
				 auser->refusal_is_limit ? "IN-USE" : "SYS/PERM",
				 auser->refusal);
		client_disconnect(client, auser->refusal);
	}
	if (access_rules_next_hook_client_created != NULL)
		access_rules_next_hook_client_created(clientp);
}

void access_rules_pop3_init(void)
{
	if (pop3_client_created_hook_set == NULL)
		return;
	access_rules_pop3_active = TRUE;
	access_rules_next_hook_client_created =
		pop3_client_created_hook_set(access_rules_pop3_client_created);
}

void access_rules_pop3_deinit(void)
{
	if (!access_rules_pop3_active)
		return;
	pop3_client_created_hook_set(access_rules_next_hook_client_created);
	access_rules_pop3_active = FALSE;
}
