/* Reads the leave_on_server_* settings of a user. Any of them may come
   from the userdb, so each is checked at every login; a bad value
   refuses the session instead of guessing, and never means "delete". */

#include "lib.h"
#include "str.h"
#include <ctype.h>
#include "mail-user.h"
#include "leave-on-server-settings.h"

static const char *const leave_on_server_policy_names[] = {
	[LEAVE_ON_SERVER_POLICY_DELETE] = "delete",
	[LEAVE_ON_SERVER_POLICY_KEEP] = "keep",
	[LEAVE_ON_SERVER_POLICY_EXPIRE] = "expire",
	[LEAVE_ON_SERVER_POLICY_QUOTA] = "quota",
};

const char *leave_on_server_policy_name(enum leave_on_server_policy policy)
{
	return leave_on_server_policy_names[policy];
}

bool leave_on_server_device_name_valid(const char *name)
{
	const char *p;

	if (name[0] == '\0' || strlen(name) > LEAVE_ON_SERVER_DEVICE_NAME_MAX)
		return FALSE;
	/* the name is part of an attribute key and of log lines */
	for (p = name; *p != '\0'; p++) {
		if (!i_isalnum(*p) && strchr("._-+@", *p) == NULL)
			return FALSE;
	}
	return TRUE;
}

static const char *
los_getenv(struct mail_user *user, const char *name, const char *def)
{
	const char *value = mail_user_plugin_getenv(user, name);

	return value == NULL || value[0] == '\0' ? def : value;
}

static int
los_parse_bool(struct mail_user *user, const char *name, const char *def,
	       bool *value_r, const char **error_r)
{
	const char *value = los_getenv(user, name, def);

	if (strcasecmp(value, "yes") == 0) {
		*value_r = TRUE;
		return 0;
	}
	if (strcasecmp(value, "no") == 0) {
		*value_r = FALSE;
		return 0;
	}
	*error_r = t_strdup_printf("%s=%s: must be yes or no", name, value);
	return -1;
}

static int
los_parse_uint(struct mail_user *user, const char *name, const char *def,
	       unsigned int max, unsigned int *value_r, const char **error_r)
{
	const char *value = los_getenv(user, name, def);

	if (str_to_uint(value, value_r) < 0 || *value_r > max) {
		*error_r = t_strdup_printf(
			"%s=%s: must be a whole number from 0 to %u",
			name, value, max);
		return -1;
	}
	return 0;
}

/* A quota threshold: "90%" or "90", 1 to 100 percent of the limit. */
static int
los_parse_percent(struct mail_user *user, const char *name, const char *def,
		  unsigned int *value_r, const char **error_r)
{
	const char *value = los_getenv(user, name, def);
	size_t len = strlen(value);
	const char *digits = value;

	if (len > 0 && value[len-1] == '%')
		digits = t_strndup(value, len - 1);
	if (str_to_uint(digits, value_r) < 0 ||
	    *value_r < 1 || *value_r > 100) {
		*error_r = t_strdup_printf(
			"%s=%s: must be a percentage of the quota limit "
			"from 1%% to 100%%", name, value);
		return -1;
	}
	return 0;
}

int leave_on_server_settings_read(struct mail_user *user,
				  const struct leave_on_server_settings **set_r,
				  const char **error_r)
{
	struct leave_on_server_settings *set;
	const char *value;
	unsigned int i;
	bool found = FALSE;

	set = p_new(user->pool, struct leave_on_server_settings, 1);

	value = los_getenv(user, "leave_on_server_policy", "keep");
	for (i = 0; i < N_ELEMENTS(leave_on_server_policy_names); i++) {
		if (strcasecmp(value, leave_on_server_policy_names[i]) == 0) {
			set->policy = i;
			found = TRUE;
		}
	}
	if (!found) {
		*error_r = t_strdup_printf(
			"leave_on_server_policy=%s: unknown policy "
			"(use delete, keep, expire or quota)", value);
		return -1;
	}

	/* a day count is checked even when the policy doesn't use it, so
	   that a typo shows up before the policy is switched to expire */
	value = los_getenv(user, "leave_on_server_expire_days", NULL);
	if (set->policy == LEAVE_ON_SERVER_POLICY_EXPIRE && value == NULL) {
		*error_r = "leave_on_server_expire_days is not set "
			"(leave_on_server_policy=expire needs it)";
		return -1;
	}
	if (los_parse_uint(user, "leave_on_server_expire_days", "0",
			   36500, &set->expire_days, error_r) < 0)
		return -1;

	value = los_getenv(user, "leave_on_server_expire_from", "all");
	if (strcasecmp(value, "all") == 0)
		set->expire_from = LEAVE_ON_SERVER_EXPIRE_FROM_ALL;
	else if (strcasecmp(value, "first") == 0)
		set->expire_from = LEAVE_ON_SERVER_EXPIRE_FROM_FIRST;
	else {
		*error_r = t_strdup_printf(
			"leave_on_server_expire_from=%s: must be all or first",
			value);
		return -1;
	}

	if (los_parse_percent(user, "leave_on_server_quota_high", "90%",
			      &set->quota_high, error_r) < 0 ||
	    los_parse_percent(user, "leave_on_server_quota_low", "80%",
			      &set->quota_low, error_r) < 0)
		return -1;
	if (set->quota_low >= set->quota_high) {
		*error_r = t_strdup_printf(
			"leave_on_server_quota_low=%u%% must be below "
			"leave_on_server_quota_high=%u%%",
			set->quota_low, set->quota_high);
		return -1;
	}

	if (los_parse_bool(user, "leave_on_server_mark_seen", "yes",
			   &set->mark_seen, error_r) < 0 ||
	    los_parse_bool(user, "leave_on_server_new_only", "no",
			   &set->new_only, error_r) < 0)
		return -1;

	set->move_to = p_strdup(user->pool,
		los_getenv(user, "leave_on_server_move_to", ""));

	set->device_field = p_strdup(user->pool,
		los_getenv(user, "leave_on_server_device_field", "pop3_device"));
	value = los_getenv(user, set->device_field,
			   LEAVE_ON_SERVER_DEFAULT_DEVICE);
	if (!leave_on_server_device_name_valid(value)) {
		*error_r = t_strdup_printf(
			"%s=%s: a device name is 1 to %u letters, digits "
			"and ._-+@ (from leave_on_server_device_field)",
			set->device_field, value,
			LEAVE_ON_SERVER_DEVICE_NAME_MAX);
		return -1;
	}
	set->device = p_strdup(user->pool, value);
	*set_r = set;
	return 0;
}
