/* POP3 glue: ties the session to the user's context, advertises EXPIRE
   in CAPA, and after QUIT runs expiry or quota cleanup. */

#include "pop3-common.h"
#include "ostream.h"
#include "leave-on-server-settings.h"
#include "leave-on-server-user.h"
#include "leave-on-server-storage.h"
#include "leave-on-server-cleanup.h"
#include "leave-on-server-capa.h"
#include "leave-on-server-plugin.h"

/* present only in the pop3 binary: the plugin also loads elsewhere */
#pragma weak pop3_client_created_hook_set
#pragma weak pop3_module_register

#define LEAVE_ON_SERVER_POP3_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, leave_on_server_pop3_module)

struct leave_on_server_client {
	union pop3_module_context module_ctx;
};

static MODULE_CONTEXT_DEFINE_INIT(leave_on_server_pop3_module,
				  &pop3_module_register);
static pop3_client_created_func_t *leave_on_server_next_hook_client_created;
static bool leave_on_server_pop3_active = FALSE;

/* RFC 2449: what the server does with mail left on it, in days. */
static const char *
leave_on_server_expire_capability(const struct leave_on_server_settings *set)
{
	switch (set->policy) {
	case LEAVE_ON_SERVER_POLICY_KEEP:
		return "EXPIRE NEVER";
	case LEAVE_ON_SERVER_POLICY_EXPIRE:
		return t_strdup_printf("EXPIRE %u", set->expire_days);
	case LEAVE_ON_SERVER_POLICY_DELETE:
	case LEAVE_ON_SERVER_POLICY_QUOTA:
		/* delete: the client decides; quota: no promised time */
		break;
	}
	return NULL;
}

static void leave_on_server_client_destroy(struct client *client,
					   const char *reason)
{
	struct leave_on_server_client *lclient =
		LEAVE_ON_SERVER_POP3_CONTEXT(client);
	struct leave_on_server_user *luser =
		leave_on_server_user_get(client->user);

	/* a session that ended without QUIT changes nothing, not even
	   the device's last_seen (RFC 1939's UPDATE state) */
	if (luser->device != NULL && client->mailbox != NULL &&
	    luser->saved_at_quit && client->delete_success)
		(void)leave_on_server_cleanup(luser);
	luser->client = NULL;
	lclient->module_ctx.super.destroy(client, reason);
}

static void leave_on_server_pop3_client_created(struct client **clientp)
{
	struct client *client = *clientp;
	struct leave_on_server_user *luser =
		leave_on_server_user_get(client->user);
	struct leave_on_server_client *lclient;
	const char *capability;

	if (luser != NULL) {
		luser->client = client;
		lclient = p_new(client->pool, struct leave_on_server_client, 1);
		lclient->module_ctx.super = client->v;
		client->v.destroy = leave_on_server_client_destroy;
		MODULE_CONTEXT_SET(client, leave_on_server_pop3_module,
				   lclient);

		capability = leave_on_server_expire_capability(luser->set);
		if (capability != NULL) {
			struct ostream *output = client->output;

			client->output = leave_on_server_capa_ostream_create(
				output, capability);
			o_stream_unref(&output);
		}
	}
	if (leave_on_server_next_hook_client_created != NULL)
		leave_on_server_next_hook_client_created(clientp);
}

void leave_on_server_pop3_init(void)
{
	if (pop3_client_created_hook_set == NULL)
		return;
	leave_on_server_pop3_active = TRUE;
	leave_on_server_next_hook_client_created =
		pop3_client_created_hook_set(leave_on_server_pop3_client_created);
}

void leave_on_server_pop3_deinit(void)
{
	if (!leave_on_server_pop3_active)
		return;
	pop3_client_created_hook_set(leave_on_server_next_hook_client_created);
	leave_on_server_pop3_active = FALSE;
}
