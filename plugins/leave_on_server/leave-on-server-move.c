/* leave_on_server_move_to: expunged mail is moved to a mailbox instead. */

#include "lib.h"
#include "mail-storage.h"
#include "mail-namespace.h"
#include "leave-on-server-settings.h"
#include "leave-on-server-user.h"
#include "leave-on-server-move.h"

static int leave_on_server_move_open(struct leave_on_server_user *luser)
{
	const char *name = luser->set->move_to;
	struct mail_namespace *ns;
	struct mailbox *box;
	enum mail_error error;

	ns = mail_namespace_find(luser->user->namespaces, name);
	box = mailbox_alloc(ns->list, name, 0);
	if (mailbox_open(box) < 0) {
		(void)mailbox_get_last_error(box, &error);
		if (error != MAIL_ERROR_NOTFOUND ||
		    (mailbox_create(box, NULL, FALSE) < 0 &&
		     mailbox_get_last_mail_error(box) != MAIL_ERROR_EXISTS) ||
		    mailbox_open(box) < 0) {
			e_error(luser->event,
				"leave_on_server_move_to=%s: %s", name,
				mailbox_get_last_internal_error(box, NULL));
			mailbox_free(&box);
			return -1;
		}
	}
	luser->move_box = box;
	luser->move_trans = mailbox_transaction_begin(box,
		MAILBOX_TRANSACTION_FLAG_EXTERNAL, __func__);
	return 0;
}

int leave_on_server_move_copy(struct leave_on_server_user *luser,
			      struct mail *mail)
{
	struct mail_save_context *save_ctx;

	if (luser->move_failed)
		return -1;
	if (luser->move_trans == NULL &&
	    leave_on_server_move_open(luser) < 0) {
		luser->move_failed = TRUE;
		return -1;
	}
	save_ctx = mailbox_save_alloc(luser->move_trans);
	mailbox_save_copy_flags(save_ctx, mail);
	if (mailbox_copy(&save_ctx, mail) < 0) {
		e_error(luser->event,
			"leave_on_server_move_to=%s: copying UID %u failed: %s",
			luser->set->move_to, mail->uid,
			mailbox_get_last_internal_error(luser->move_box, NULL));
		luser->move_failed = TRUE;
		return -1;
	}
	return 0;
}

int leave_on_server_move_commit(struct leave_on_server_user *luser)
{
	int ret = luser->move_failed ? -1 : 0;

	if (luser->move_trans != NULL) {
		if (ret < 0)
			mailbox_transaction_rollback(&luser->move_trans);
		else if (mailbox_transaction_commit(&luser->move_trans) < 0) {
			e_error(luser->event,
				"leave_on_server_move_to=%s: %s",
				luser->set->move_to,
				mailbox_get_last_internal_error(luser->move_box, NULL));
			ret = -1;
		}
		mailbox_free(&luser->move_box);
	}
	luser->move_failed = FALSE;
	return ret;
}

void leave_on_server_move_rollback(struct leave_on_server_user *luser)
{
	if (luser->move_trans != NULL) {
		mailbox_transaction_rollback(&luser->move_trans);
		mailbox_free(&luser->move_box);
	}
	luser->move_failed = FALSE;
}
