#ifndef LEAVE_ON_SERVER_SETTINGS_H
#define LEAVE_ON_SERVER_SETTINGS_H

struct mail_user;

enum leave_on_server_policy {
	/* RFC 1939: DELE and QUIT expunge */
	LEAVE_ON_SERVER_POLICY_DELETE,
	/* DELE hides the message from the device; nothing is expunged */
	LEAVE_ON_SERVER_POLICY_KEEP,
	/* keep, and expunge N days after retrieval */
	LEAVE_ON_SERVER_POLICY_EXPIRE,
	/* keep, and expunge what every device has retrieved, oldest first,
	   while quota usage is high */
	LEAVE_ON_SERVER_POLICY_QUOTA,
};

enum leave_on_server_expire_from {
	/* N days after the last of the registered devices retrieved it */
	LEAVE_ON_SERVER_EXPIRE_FROM_ALL,
	/* N days after the first device retrieved it */
	LEAVE_ON_SERVER_EXPIRE_FROM_FIRST,
};

struct leave_on_server_settings {
	enum leave_on_server_policy policy;
	unsigned int expire_days;
	enum leave_on_server_expire_from expire_from;
	/* percentages of the quota limit */
	unsigned int quota_high, quota_low;

	/* the userdb field that names the device */
	const char *device_field;
	/* this session's device; "" is the default device */
	const char *device;

	bool mark_seen;
	bool new_only;
	/* "" expunges; else the mailbox that expunged mail is moved to */
	const char *move_to;
};

#define LEAVE_ON_SERVER_DEFAULT_DEVICE "default"
#define LEAVE_ON_SERVER_DEVICE_NAME_MAX 64

/* Reads and checks the leave_on_server_* settings of user. On error,
   error_r names the setting and what is wrong with its value. */
int leave_on_server_settings_read(struct mail_user *user,
				  const struct leave_on_server_settings **set_r,
				  const char **error_r);

bool leave_on_server_device_name_valid(const char *name);
const char *leave_on_server_policy_name(enum leave_on_server_policy policy);

#endif
