/* access_rules: per-client access rules for IMAP and POP3 sessions. */

#include "lib.h"
#include "mail-storage-hooks.h"
#include "access-rules-user.h"
#include "access-rules-storage.h"
#include "access-rules-client.h"
#include "access-rules-plugin.h"

const char *access_rules_plugin_version = DOVECOT_ABI_VERSION;

static struct mail_storage_hooks access_rules_mail_storage_hooks = {
	.mail_user_created = access_rules_mail_user_created,
	.mailbox_list_created = access_rules_mailbox_list_created,
	.mailbox_allocated = access_rules_mailbox_allocated,
	.mail_allocated = access_rules_mail_allocated,
};

void access_rules_plugin_init(struct module *module)
{
	mail_storage_hooks_add(module, &access_rules_mail_storage_hooks);
	access_rules_imap_init();
	access_rules_pop3_init();
}

void access_rules_plugin_deinit(void)
{
	access_rules_pop3_deinit();
	access_rules_imap_deinit();
	mail_storage_hooks_remove(&access_rules_mail_storage_hooks);
	access_rules_users_deinit();
}
