/* The fts plugin keeps per-user state that its backend must set up
   (fts_mail_user_init); without it, allocating a mailbox crashes. */

#include "lib.h"
#include "module-context.h"
#include "mail-storage.h"
#include "mail-user.h"
#include "fts-user.h"
#include "fts-lmdb-user.h"

#define FTS_LMDB_USER_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, fts_lmdb_user_module)

struct fts_lmdb_user {
	union mail_user_module_context module_ctx;
};

static MODULE_CONTEXT_DEFINE_INIT(fts_lmdb_user_module,
				  &mail_user_module_register);

static void fts_lmdb_mail_user_deinit(struct mail_user *user)
{
	struct fts_lmdb_user *fuser = FTS_LMDB_USER_CONTEXT(user);

	fts_mail_user_deinit(user);
	fuser->module_ctx.super.deinit(user);
}

void fts_lmdb_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct fts_lmdb_user *fuser;
	const char *error;

	/* lib-fts' tokenizers are not used: we index what SEARCH reads */
	if (fts_mail_user_init(user, FALSE, &error) < 0) {
		e_error(user->event, "fts-lmdb: %s", error);
		return;
	}
	fuser = p_new(user->pool, struct fts_lmdb_user, 1);
	fuser->module_ctx.super = *v;
	user->vlast = &fuser->module_ctx.super;
	v->deinit = fts_lmdb_mail_user_deinit;
	MODULE_CONTEXT_SET(user, fts_lmdb_user_module, fuser);
}
