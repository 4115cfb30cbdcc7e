/* leave_on_server: POP3 leave-on-server policies, per device. */

#include "lib.h"
#include "mail-storage-hooks.h"
#include "leave-on-server-user.h"
#include "leave-on-server-storage.h"
#include "leave-on-server-plugin.h"

const char *leave_on_server_plugin_version = DOVECOT_ABI_VERSION;

static struct mail_storage_hooks leave_on_server_mail_storage_hooks = {
	.mail_user_created = leave_on_server_mail_user_created,
	.mailbox_allocated = leave_on_server_mailbox_allocated,
	.mail_allocated = leave_on_server_mail_allocated,
};

void leave_on_server_plugin_init(struct module *module)
{
	mail_storage_hooks_add(module, &leave_on_server_mail_storage_hooks);
	leave_on_server_pop3_init();
}

void leave_on_server_plugin_deinit(void)
{
	leave_on_server_pop3_deinit();
	mail_storage_hooks_remove(&leave_on_server_mail_storage_hooks);
}
