/* POP3 glue: a refused session is answered -ERR with its reason in
   place of "+OK Logged in.". */

#include "pop3-common.h"
#include "buffer.h"
#include "ostream.h"
#include "access-rules-user.h"
#include "access-rules-client.h"

/* present only in the pop3 binary; see access-rules-imap.c */
#pragma weak pop3_client_created_hook_set
#pragma weak client_send_line

static pop3_client_created_func_t *access_rules_next_hook_client_created;
static bool access_rules_pop3_active = FALSE;

static void access_rules_pop3_client_created(struct client **clientp)
{
	struct client *client = *clientp;
	struct access_rules_user *auser = access_rules_user_get(client->user);

	if (auser != NULL && auser->refusal != NULL) {
		/* RFC 2449's IN-USE for a session cap, RFC 3206's SYS/PERM
		   for a policy that won't change if the client retries. */
		client_send_line(client, "-ERR [%s] %s",
				 auser->refusal_is_limit ? "IN-USE" : "SYS/PERM",
				 auser->refusal);
		(void)o_stream_flush(client->output);
		/* The pop3 process goes on with the login after this hook
		   and must not find the client's streams closed (it would
		   destroy the client and then use it again, or fail to add
		   pipelined input). From here on the session writes to a
		   buffer that is never sent, so the client doesn't see
		   "+OK Logged in."; opening INBOX then fails, since a
		   refused session can't open any mailbox, which ends it. */
		o_stream_destroy(&client->output);
		client->output = o_stream_create_buffer(
			buffer_create_dynamic(client->pool, 256));
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
