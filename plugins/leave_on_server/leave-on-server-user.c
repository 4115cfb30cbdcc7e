/* Per-user setup: settings, the device, the event. A bad setting fails
   the user's initialization, which refuses the POP3 session with the
   setting named in the log: the plugin never guesses, and never falls
   back to deleting. */

#include "lib.h"
#include "ioloop.h"
#include "mail-storage-settings.h"
#include "mail-storage-service.h"
#include "leave-on-server-settings.h"
#include "leave-on-server-quota.h"
#include "leave-on-server-state.h"
#include "leave-on-server-user.h"

struct event_category event_category_leave_on_server = {
	.name = "leave_on_server",
};

struct leave_on_server_user_module leave_on_server_user_module =
	MODULE_CONTEXT_INIT(&mail_user_module_register);

uint32_t leave_on_server_today(void)
{
	return LEAVE_ON_SERVER_DAY(ioloop_time);
}

struct leave_on_server_user *leave_on_server_user_get(struct mail_user *user)
{
	return LEAVE_ON_SERVER_USER_CONTEXT(user);
}

static void leave_on_server_user_deinit(struct mail_user *user)
{
	struct leave_on_server_user *luser = LEAVE_ON_SERVER_USER_CONTEXT(user);

	event_unref(&luser->event);
	luser->module_ctx.super.deinit(user);
}

static int
leave_on_server_user_check(struct mail_user *user,
			   const struct leave_on_server_settings *set,
			   const char **error_r)
{
	const struct mail_storage_settings *mail_set =
		mail_user_set_get_storage_set(user);

	if (mail_set->mail_attribute_dict[0] == '\0') {
		*error_r = "mail_attribute_dict is not set: leave_on_server "
			"keeps each device's state as a mailbox attribute "
			"(e.g. mail_attribute_dict = file:%h/dovecot-attributes)";
		return -1;
	}
	if (set->policy == LEAVE_ON_SERVER_POLICY_QUOTA &&
	    !leave_on_server_quota_available()) {
		*error_r = "leave_on_server_policy=quota: the quota plugin is "
			"not loaded (list quota before leave_on_server in "
			"mail_plugins)";
		return -1;
	}
	return 0;
}

void leave_on_server_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct leave_on_server_user *luser;
	const struct leave_on_server_settings *set;
	const char *error;

	/* only POP3 sessions have devices */
	if (user->service == NULL || strcmp(user->service, "pop3") != 0)
		return;

	if (leave_on_server_settings_read(user, &set, &error) < 0 ||
	    leave_on_server_user_check(user, set, &error) < 0) {
		user->error = p_strdup_printf(user->pool,
			"leave_on_server: %s", error);
		return;
	}

	luser = p_new(user->pool, struct leave_on_server_user, 1);
	luser->module_ctx.super = *v;
	user->vlast = &luser->module_ctx.super;
	v->deinit = leave_on_server_user_deinit;
	luser->user = user;
	luser->set = set;
	luser->event = event_create(user->event);
	event_add_category(luser->event, &event_category_leave_on_server);
	event_add_str(luser->event, "device", set->device);
	event_set_append_log_prefix(luser->event, "leave_on_server: ");
	p_array_init(&luser->listed_seqs, user->pool, 8);
	p_array_init(&luser->retrieved, user->pool, 8);
	p_array_init(&luser->deleted, user->pool, 8);
	p_array_init(&luser->expunged, user->pool, 8);
	MODULE_CONTEXT_SET(user, leave_on_server_user_module, luser);
}
