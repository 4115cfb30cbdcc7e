/* fts_lmdb: an LMDB index for the fts plugin whose answers equal
   Dovecot's own SEARCH. */

#include "lib.h"
#include "mail-storage-hooks.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-user.h"
#include "fts-lmdb-mail.h"
#include "fts-lmdb-imap.h"
#include "fts-lmdb-search.h"
#include "fts-lmdb-plugin.h"

const char *fts_lmdb_plugin_version = DOVECOT_ABI_VERSION;
const char *fts_lmdb_plugin_dependencies[] = { "fts", NULL };

struct event_category event_category_fts_lmdb = {
	.name = "fts-lmdb",
	.parent = &event_category_fts,
};

static struct mail_storage_hooks fts_lmdb_mail_storage_hooks = {
	.mail_user_created = fts_lmdb_mail_user_created,
	.mailbox_allocated = fts_lmdb_search_mailbox_allocated,
	.mail_allocated = fts_lmdb_mail_allocated,
};

void fts_lmdb_plugin_init(struct module *module)
{
	fts_backend_register(&fts_backend_lmdb);
	mail_storage_hooks_add(module, &fts_lmdb_mail_storage_hooks);
	fts_lmdb_imap_init();
}

void fts_lmdb_plugin_deinit(void)
{
	fts_lmdb_imap_deinit();
	fts_backend_unregister(fts_backend_lmdb.name);
	mail_storage_hooks_remove(&fts_lmdb_mail_storage_hooks);
}
