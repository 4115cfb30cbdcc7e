/* Enforces read-only sessions and mailbox visibility in lib-storage, so
   that every path to a mailbox obeys them, whatever the protocol
   command. The IMAP and POP3 glue only adds clearer replies on top. */

#include "lib.h"
#include "mail-storage-private.h"
#include "mailbox-list-private.h"
#include "mail-namespace.h"
#include "access-rules-user.h"
#include "access-rules-storage.h"

#define ACCESS_RULES_STORAGE_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, access_rules_storage_module)
#define ACCESS_RULES_LIST_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, access_rules_mailbox_list_module)
#define ACCESS_RULES_MAIL_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, access_rules_mail_module)

struct access_rules_mailbox {
	union mailbox_module_context module_ctx;
	struct access_rules_user *auser;
};

struct access_rules_mail {
	union mail_module_context module_ctx;
	/* The outermost expunge when this plugin's hook ran. A refused
	   expunge stops before it, so that plugins loaded earlier
	   (lazy_expunge) don't act on an expunge that won't happen. */
	void (*outer_expunge)(struct mail *mail);
};

struct access_rules_mailbox_list {
	union mailbox_list_module_context module_ctx;
	struct access_rules_user *auser;
};

static MODULE_CONTEXT_DEFINE_INIT(access_rules_storage_module,
				  &mail_storage_module_register);
static MODULE_CONTEXT_DEFINE_INIT(access_rules_mailbox_list_module,
				  &mailbox_list_module_register);
static MODULE_CONTEXT_DEFINE_INIT(access_rules_mail_module,
				  &mail_module_register);

/* Marks a transaction that tried to expunge in a read-only session;
   its commit then fails, so the client hears about it. */
static struct access_rules_transaction_marker {
	union mailbox_transaction_module_context module_ctx;
} access_rules_transaction_refused;

static bool access_rules_box_visible(struct access_rules_user *auser,
				     struct mailbox *box)
{
	return access_rules_user_mailbox_visible(auser,
		mail_namespace_get_sep(box->list->ns), box->vname);
}

static void access_rules_set_readonly_error(struct mailbox *box)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	mail_storage_set_error(box->storage, MAIL_ERROR_PERM,
		access_rules_user_readonly_error(abox->auser));
}

/* Returns 0 if the mailbox may be changed, -1 with the storage error
   set if not. */
static int access_rules_box_check_writable(struct mailbox *box)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (!access_rules_user_is_readonly(abox->auser))
		return 0;
	access_rules_set_readonly_error(box);
	return -1;
}

static void access_rules_set_not_found(struct mailbox *box)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (abox->auser->refusal != NULL) {
		mail_storage_set_error(box->storage, MAIL_ERROR_PERM,
				       abox->auser->refusal);
	} else {
		/* hidden mailboxes look exactly like missing ones, so that
		   their names don't leak */
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
				       T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
	}
}

static bool access_rules_is_readonly(struct mailbox *box)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	/* POP3 ignores changes to a read-only mailbox silently; leaving it
	   writable there lets the refused expunge fail the commit, so that
	   QUIT answers -ERR instead of pretending to have deleted */
	if (access_rules_user_is_readonly(abox->auser) &&
	    abox->auser->session.protocol != ACCESS_RULE_PROTOCOL_POP3)
		return TRUE;
	return abox->module_ctx.super.is_readonly(box);
}

static int
access_rules_mailbox_exists(struct mailbox *box, bool auto_boxes,
			    enum mailbox_existence *existence_r)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (!access_rules_box_visible(abox->auser, box)) {
		*existence_r = MAILBOX_EXISTENCE_NONE;
		return 0;
	}
	return abox->module_ctx.super.exists(box, auto_boxes, existence_r);
}

static int access_rules_mailbox_open(struct mailbox *box)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (!access_rules_box_visible(abox->auser, box)) {
		access_rules_set_not_found(box);
		return -1;
	}
	return abox->module_ctx.super.open(box);
}

static int
access_rules_mailbox_create(struct mailbox *box,
			    const struct mailbox_update *update,
			    bool directory)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (!access_rules_box_visible(abox->auser, box)) {
		mail_storage_set_error(box->storage, MAIL_ERROR_PERM,
				       MAIL_ERRSTR_NO_PERMISSION);
		return -1;
	}
	/* INBOX and the admin's autocreated mailboxes are created on first
	   use, not by the user's request */
	if (!box->inbox_user && !mailbox_is_autocreated(box) &&
	    access_rules_box_check_writable(box) < 0)
		return -1;
	return abox->module_ctx.super.create_box(box, update, directory);
}

static int access_rules_mailbox_delete(struct mailbox *box)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (!access_rules_box_visible(abox->auser, box)) {
		access_rules_set_not_found(box);
		return -1;
	}
	if (access_rules_box_check_writable(box) < 0)
		return -1;
	return abox->module_ctx.super.delete_box(box);
}

static int access_rules_mailbox_rename(struct mailbox *src, struct mailbox *dest)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(src);

	if (!access_rules_box_visible(abox->auser, src)) {
		access_rules_set_not_found(src);
		return -1;
	}
	if (!access_rules_box_visible(abox->auser, dest)) {
		mail_storage_set_error(src->storage, MAIL_ERROR_PERM,
				       MAIL_ERRSTR_NO_PERMISSION);
		return -1;
	}
	if (access_rules_box_check_writable(src) < 0)
		return -1;
	return abox->module_ctx.super.rename_box(src, dest);
}

static int
access_rules_save_begin(struct mail_save_context *ctx, struct istream *input)
{
	struct mailbox *box = ctx->transaction->box;
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (access_rules_box_check_writable(box) < 0)
		return -1;
	return abox->module_ctx.super.save_begin(ctx, input);
}

static int
access_rules_copy(struct mail_save_context *ctx, struct mail *mail)
{
	struct mailbox *box = ctx->transaction->box;
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(box);

	if (access_rules_box_check_writable(box) < 0) {
		mailbox_save_cancel(&ctx);
		return -1;
	}
	return abox->module_ctx.super.copy(ctx, mail);
}

/* Metadata (SETMETADATA, and the state other plugins keep in
   attributes) is part of what a read-only session leaves alone. */
static int
access_rules_attribute_set(struct mailbox_transaction_context *t,
			   enum mail_attribute_type type_flags,
			   const char *key,
			   const struct mail_attribute_value *value)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(t->box);

	if (access_rules_box_check_writable(t->box) < 0)
		return -1;
	return abox->module_ctx.super.attribute_set(t, type_flags, key, value);
}

static int
access_rules_transaction_commit(struct mailbox_transaction_context *t,
				struct mail_transaction_commit_changes *changes_r)
{
	struct access_rules_mailbox *abox = ACCESS_RULES_STORAGE_CONTEXT(t->box);

	if (MODULE_CONTEXT(t, access_rules_storage_module) != NULL) {
		struct mailbox *box = t->box;

		abox->module_ctx.super.transaction_rollback(t);
		access_rules_set_readonly_error(box);
		return -1;
	}
	return abox->module_ctx.super.transaction_commit(t, changes_r);
}

static void
access_rules_mail_update_flags(struct mail *_mail, enum modify_type modify_type,
			       enum mail_flags flags)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct access_rules_mail *amail = ACCESS_RULES_MAIL_CONTEXT(mail);
	struct access_rules_mailbox *abox =
		ACCESS_RULES_STORAGE_CONTEXT(_mail->box);

	/* implicit flag changes (\Seen on POP3 RETR) are dropped quietly;
	   explicit IMAP STORE was already refused with an error */
	if (access_rules_user_is_readonly(abox->auser))
		return;
	amail->module_ctx.super.update_flags(_mail, modify_type, flags);
}

static void
access_rules_mail_update_keywords(struct mail *_mail,
				  enum modify_type modify_type,
				  struct mail_keywords *keywords)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct access_rules_mail *amail = ACCESS_RULES_MAIL_CONTEXT(mail);
	struct access_rules_mailbox *abox =
		ACCESS_RULES_STORAGE_CONTEXT(_mail->box);

	if (access_rules_user_is_readonly(abox->auser))
		return;
	amail->module_ctx.super.update_keywords(_mail, modify_type, keywords);
}

static void access_rules_mail_expunge(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct access_rules_mail *amail = ACCESS_RULES_MAIL_CONTEXT(mail);
	struct access_rules_mailbox *abox =
		ACCESS_RULES_STORAGE_CONTEXT(_mail->box);

	if (access_rules_user_is_readonly(abox->auser)) {
		MODULE_CONTEXT_SET(_mail->transaction,
				   access_rules_storage_module,
				   &access_rules_transaction_refused);
		return;
	}
	amail->outer_expunge(_mail);
}

/* The wrapper chain at this plugin's place in it: on to the wrappers
   added after this plugin's hook, and to the storage. */
static void access_rules_mail_expunge_inner(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct access_rules_mail *amail = ACCESS_RULES_MAIL_CONTEXT(mail);

	amail->module_ctx.super.expunge(_mail);
}

void access_rules_mail_allocated(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct mail_vfuncs *v = mail->vlast;
	struct access_rules_mail *amail;

	if (MODULE_CONTEXT(_mail->box, access_rules_storage_module) == NULL)
		return;

	amail = p_new(mail->pool, struct access_rules_mail, 1);
	amail->module_ctx.super = *v;
	mail->vlast = &amail->module_ctx.super;

	v->update_flags = access_rules_mail_update_flags;
	v->update_keywords = access_rules_mail_update_keywords;
	/* expunge goes outside every wrapper made so far, not just the
	   last one */
	v->expunge = access_rules_mail_expunge_inner;
	amail->outer_expunge = mail->v.expunge;
	mail->v.expunge = access_rules_mail_expunge;
	MODULE_CONTEXT_SET(mail, access_rules_mail_module, amail);
}

void access_rules_mailbox_allocated(struct mailbox *box)
{
	struct access_rules_user *auser =
		access_rules_user_get(box->storage->user);
	struct mailbox_vfuncs *v = box->vlast;
	struct access_rules_mailbox *abox;

	if (auser == NULL)
		return;

	abox = p_new(box->pool, struct access_rules_mailbox, 1);
	abox->module_ctx.super = *v;
	abox->auser = auser;
	box->vlast = &abox->module_ctx.super;

	v->is_readonly = access_rules_is_readonly;
	v->exists = access_rules_mailbox_exists;
	v->open = access_rules_mailbox_open;
	v->create_box = access_rules_mailbox_create;
	v->delete_box = access_rules_mailbox_delete;
	v->rename_box = access_rules_mailbox_rename;
	v->save_begin = access_rules_save_begin;
	v->copy = access_rules_copy;
	v->attribute_set = access_rules_attribute_set;
	v->transaction_commit = access_rules_transaction_commit;
	MODULE_CONTEXT_SET(box, access_rules_storage_module, abox);
}

static const struct mailbox_info *
access_rules_list_iter_next(struct mailbox_list_iterate_context *ctx)
{
	struct access_rules_mailbox_list *alist =
		ACCESS_RULES_LIST_CONTEXT(ctx->list);
	const struct mailbox_info *info;
	char sep = mail_namespace_get_sep(ctx->list->ns);

	while ((info = alist->module_ctx.super.iter_next(ctx)) != NULL) {
		if (access_rules_user_mailbox_visible(alist->auser, sep,
						      info->vname))
			break;
	}
	return info;
}

void access_rules_mailbox_list_created(struct mailbox_list *list)
{
	struct access_rules_user *auser = access_rules_user_get(list->ns->user);
	struct mailbox_list_vfuncs *v = list->vlast;
	struct access_rules_mailbox_list *alist;

	if (auser == NULL)
		return;

	alist = p_new(list->pool, struct access_rules_mailbox_list, 1);
	alist->module_ctx.super = *v;
	alist->auser = auser;
	list->vlast = &alist->module_ctx.super;
	v->iter_next = access_rules_list_iter_next;
	MODULE_CONTEXT_SET(list, access_rules_mailbox_list_module, alist);
}
