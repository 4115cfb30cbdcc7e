/* leave-on-server: lists a user's POP3 devices, or forgets one.

     leave-on-server [-c dovecot.conf] list -u user
     leave-on-server [-c dovecot.conf] forget -u user device

   It reads the state where the plugin keeps it (INBOX's private
   attributes), through Dovecot's own user lookup and storage, like
   doveadm does. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "time-util.h"
#include "master-service.h"
#include "mail-storage-service.h"
#include "mail-namespace.h"
#include "mail-storage.h"
#include "leave-on-server-settings.h"
#include "leave-on-server-state.h"

#include <stdio.h>
#include <sysexits.h>
#include <unistd.h>

static int leave_on_server_tool_exit = 0;

static void ATTR_NORETURN leave_on_server_tool_usage(void)
{
	fprintf(stderr,
		"usage: leave-on-server [-c dovecot.conf] list -u user\n"
		"       leave-on-server [-c dovecot.conf] forget -u user device\n");
	exit(EX_USAGE);
}

static void leave_on_server_tool_fail(const char *fmt, ...) ATTR_FORMAT(1, 2);
static void leave_on_server_tool_fail(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	fprintf(stderr, "leave-on-server: %s\n", t_strdup_vprintf(fmt, args));
	va_end(args);
	leave_on_server_tool_exit = EX_TEMPFAIL;
}

static void leave_on_server_tool_list(struct mailbox *box)
{
	ARRAY_TYPE(leave_on_server_device) devs;
	ARRAY_TYPE(const_string) damaged;
	struct leave_on_server_device *dev;
	ARRAY_TYPE(seq_range) done;
	const char *error, *name;

	t_array_init(&devs, 8);
	t_array_init(&damaged, 2);
	if (leave_on_server_state_load_all(box, pool_datastack_create(),
					   &devs, &damaged, &error) < 0) {
		leave_on_server_tool_fail("%s", error);
		return;
	}
	array_foreach_elem(&devs, dev) {
		bool is_damaged = FALSE;

		array_foreach_elem(&damaged, name) {
			if (strcmp(name, dev->name) == 0)
				is_damaged = TRUE;
		}
		t_array_init(&done, 8);
		leave_on_server_device_get_done(dev, (uint32_t)-1, &done);
		printf("%s\tlast_seen=%s\tretrieved=%u\thidden=%u%s\n",
		       dev->name, dev->last_seen == 0 ? "never" :
		       t_strfgmtime("%Y-%m-%dT%H:%M:%S+0000", dev->last_seen),
		       seq_range_count(&done), seq_range_count(&dev->hidden),
		       is_damaged ? "\tdamaged" : "");
	}
}

static void leave_on_server_tool_forget(struct mailbox *box, const char *name)
{
	struct mailbox_transaction_context *t;
	struct leave_on_server_device *dev;
	const char *damage, *error;
	int ret;

	if (!leave_on_server_device_name_valid(name)) {
		fprintf(stderr, "leave-on-server: %s: not a device name\n",
			name);
		leave_on_server_tool_exit = EX_USAGE;
		return;
	}
	ret = leave_on_server_state_load(box, pool_datastack_create(), name,
					 &dev, &damage, &error);
	if (ret < 0) {
		leave_on_server_tool_fail("%s", error);
		return;
	}
	if (ret == 0) {
		fprintf(stderr, "leave-on-server: no device %s\n", name);
		leave_on_server_tool_exit = EX_NOUSER;
		return;
	}
	t = mailbox_transaction_begin(box, MAILBOX_TRANSACTION_FLAG_EXTERNAL,
				      __func__);
	if (leave_on_server_state_forget(t, name) < 0) {
		mailbox_transaction_rollback(&t);
		ret = -1;
	} else {
		ret = mailbox_transaction_commit(&t);
	}
	if (ret < 0) {
		leave_on_server_tool_fail("forgetting %s: %s", name,
			mailbox_get_last_internal_error(box, NULL));
		return;
	}
	printf("forgot device %s\n", name);
}

static void leave_on_server_tool_run(struct mail_user *user,
				     const char *command,
				     const char *const *args)
{
	struct mail_namespace *ns;
	struct mailbox *box;

	ns = mail_namespace_find_inbox(user->namespaces);
	box = mailbox_alloc(ns->list, "INBOX", 0);
	if (mailbox_open(box) < 0) {
		leave_on_server_tool_fail("opening INBOX: %s",
			mailbox_get_last_internal_error(box, NULL));
	} else if (strcmp(command, "list") == 0) {
		leave_on_server_tool_list(box);
	} else {
		leave_on_server_tool_forget(box, args[0]);
	}
	mailbox_free(&box);
}

int main(int argc, char *argv[])
{
	struct mail_storage_service_ctx *storage_service;
	struct mail_storage_service_user *service_user;
	struct mail_storage_service_input input;
	struct mail_user *user;
	const char *username = NULL, *command, *error;
	int c, ret;

	master_service = master_service_init("leave-on-server",
		MASTER_SERVICE_FLAG_STANDALONE |
		MASTER_SERVICE_FLAG_DONT_SEND_STATS,
		&argc, &argv, "u:");
	while ((c = master_getopt(master_service)) > 0) {
		if (c == 'u')
			username = optarg;
		else
			leave_on_server_tool_usage();
	}
	argv += optind;
	/* the options may also follow the command, as with doveadm */
	command = argv[0];
	if (command != NULL) {
		optind = 1;
		argc = str_array_length((const char *const *)argv);
		while ((c = getopt(argc, argv, "u:")) > 0) {
			if (c == 'u')
				username = optarg;
			else
				leave_on_server_tool_usage();
		}
		argv += optind;
	}
	if (command == NULL || username == NULL ||
	    (strcmp(command, "list") == 0 && argv[0] != NULL) ||
	    (strcmp(command, "forget") == 0 &&
	     (argv[0] == NULL || argv[1] != NULL)) ||
	    (strcmp(command, "list") != 0 && strcmp(command, "forget") != 0))
		leave_on_server_tool_usage();

	master_service_init_log(master_service);
	master_service_init_finish(master_service);

	storage_service = mail_storage_service_init(master_service, NULL,
		MAIL_STORAGE_SERVICE_FLAG_USERDB_LOOKUP |
		MAIL_STORAGE_SERVICE_FLAG_NO_PLUGINS |
		MAIL_STORAGE_SERVICE_FLAG_NO_LOG_INIT |
		MAIL_STORAGE_SERVICE_FLAG_TEMP_PRIV_DROP);
	i_zero(&input);
	input.module = "mail";
	input.service = "leave-on-server";
	input.username = username;
	ret = mail_storage_service_lookup_next(storage_service, &input,
					       &service_user, &user, &error);
	if (ret <= 0) {
		fprintf(stderr, "leave-on-server: %s: %s\n", username,
			ret == 0 ? "no such user" : error);
		leave_on_server_tool_exit = ret == 0 ? EX_NOUSER : EX_TEMPFAIL;
	} else {
		T_BEGIN {
			leave_on_server_tool_run(user, command,
						 (const char *const *)argv);
		} T_END;
		mail_user_deinit(&user);
		mail_storage_service_user_unref(&service_user);
	}
	mail_storage_service_deinit(&storage_service);
	master_service_deinit(&master_service);
	return leave_on_server_tool_exit;
}
