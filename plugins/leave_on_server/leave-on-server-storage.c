/* The POP3 session's INBOX, seen through the device: the listing leaves
   out what the device deleted (and, with the new-only view, what it
   has retrieved), DELE under a keeping policy hides instead of
   expunging, and QUIT's commit writes the device's state in the same
   transaction as the expunges. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "mail-storage-private.h"
#include "mail-search-build.h"
#include "pop3-common.h"
#include "leave-on-server-settings.h"
#include "leave-on-server-state.h"
#include "leave-on-server-user.h"
#include "leave-on-server-move.h"
#include "leave-on-server-storage.h"

#define LEAVE_ON_SERVER_STORAGE_CONTEXT(obj) \
	MODULE_CONTEXT(obj, leave_on_server_storage_module)
#define LEAVE_ON_SERVER_MAIL_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, leave_on_server_mail_module)

#define LEAVE_ON_SERVER_LAST_SEEN_PRECISION_SECS (60*60)

struct leave_on_server_mailbox {
	union mailbox_module_context module_ctx;
	struct leave_on_server_user *luser;
};

struct leave_on_server_mail {
	union mail_module_context module_ctx;
	/* The outermost expunge when this plugin's hook ran. DELE under a
	   keeping policy stops before it: plugins loaded earlier
	   (lazy_expunge, notify and mail_log, access_rules) would take a
	   hidden message for an expunged one. */
	void (*outer_expunge)(struct mail *mail);
};

static MODULE_CONTEXT_DEFINE_INIT(leave_on_server_storage_module,
				  &mail_storage_module_register);
static MODULE_CONTEXT_DEFINE_INIT(leave_on_server_mail_module,
				  &mail_module_register);

static uint32_t leave_on_server_lowest_uid(struct mailbox *box)
{
	struct mailbox_status status;
	ARRAY_TYPE(seq_range) seqs, uids;
	const struct seq_range *range;

	mailbox_get_open_status(box, STATUS_MESSAGES | STATUS_UIDNEXT,
				&status);
	if (status.messages == 0)
		return status.uidnext;
	t_array_init(&seqs, 1);
	t_array_init(&uids, 1);
	seq_range_array_add(&seqs, 1);
	mailbox_get_uid_range(box, &seqs, &uids);
	if (array_count(&uids) == 0)
		return 1;
	range = array_front(&uids);
	return range->seq1;
}

/* Whether the last write failed because the session may not write at
   all: access_rules' readonly refuses attribute writes that way. */
static bool leave_on_server_write_refused(struct mailbox *box)
{
	enum mail_error error;

	if (mailbox_is_readonly(box))
		return TRUE;
	(void)mailbox_get_last_error(box, &error);
	return error == MAIL_ERROR_PERM;
}

/* Reads the device's state when INBOX opens, and registers a new
   device right away so that expiry waits for it from now on. */
static int leave_on_server_device_open(struct leave_on_server_user *luser,
				       struct mailbox *box)
{
	struct mailbox_transaction_context *t;
	struct mailbox_status status;
	const char *damage, *error;
	int ret;

	ret = leave_on_server_state_load(box, luser->user->pool,
					 luser->set->device, &luser->device,
					 &damage, &error);
	if (ret < 0) {
		e_error(luser->event, "Reading the state of device %s "
			"failed: %s", luser->set->device, error);
		return -1;
	}
	if (damage != NULL) {
		e_warning(luser->event, "The state of device %s is damaged, "
			  "so it gets every message listed again: %s",
			  luser->set->device, damage);
	}
	/* a new INBOX has no UIDVALIDITY before its first sync: 0 on
	   either side means "not known yet", not "changed" */
	mailbox_get_open_status(box, STATUS_UIDVALIDITY, &status);
	if (ret > 0 && damage == NULL && status.uidvalidity != 0 &&
	    luser->device->uid_validity != 0 &&
	    luser->device->uid_validity != status.uidvalidity) {
		e_info(luser->event, "INBOX's UIDVALIDITY changed "
		       "(%u -> %u): device %s starts over",
		       luser->device->uid_validity, status.uidvalidity,
		       luser->set->device);
		luser->device = leave_on_server_device_new(luser->user->pool,
							   luser->set->device);
		ret = 0;
	}
	if (status.uidvalidity != 0)
		luser->device->uid_validity = status.uidvalidity;
	luser->box = box;
	if (ret > 0 && damage == NULL)
		return 0;
	if (mailbox_is_readonly(box))
		return 0;

	luser->device->last_seen = ioloop_time;
	t = mailbox_transaction_begin(box, MAILBOX_TRANSACTION_FLAG_EXTERNAL,
				      __func__);
	if (leave_on_server_state_save(t, luser->device) < 0) {
		mailbox_transaction_rollback(&t);
		ret = -1;
	} else {
		ret = mailbox_transaction_commit(&t);
	}
	if (ret < 0 && leave_on_server_write_refused(box)) {
		/* a read-only session leaves no trace, not even the device */
		e_debug(luser->event, "Device %s not registered: %s",
			luser->set->device, mailbox_get_last_error(box, NULL));
		return 0;
	}
	if (ret < 0) {
		e_error(luser->event, "Registering device %s failed: %s",
			luser->set->device,
			mailbox_get_last_internal_error(box, NULL));
		return -1;
	}
	if (damage == NULL) {
		e_info(luser->event, "New device %s registered",
		       luser->set->device);
	}
	return 0;
}

/* Adds what another session of the same device saved since this one
   read the state, so that overlapping sessions lose no record. */
static void leave_on_server_device_reload(struct leave_on_server_user *luser)
{
	struct leave_on_server_device *stored;
	const char *damage, *error;

	if (leave_on_server_state_load(luser->box, luser->user->pool,
				       luser->set->device, &stored,
				       &damage, &error) > 0 && damage == NULL)
		leave_on_server_device_merge(luser->device, stored);
}

static void
leave_on_server_device_compact_now(struct leave_on_server_user *luser)
{
	uint32_t today = leave_on_server_today();
	uint32_t keep = luser->set->expire_days + 1;

	leave_on_server_device_compact(luser->device,
		leave_on_server_lowest_uid(luser->box),
		today > keep ? today - keep : 0);
}

struct mail_search_context *
leave_on_server_search_uids(struct mailbox_transaction_context *t,
			    const ARRAY_TYPE(seq_range) *uids,
			    enum mail_fetch_field wanted_fields)
{
	struct mail_search_args *args;
	struct mail_search_arg *arg;
	struct mail_search_context *ctx;

	args = mail_search_build_init();
	arg = mail_search_build_add(args, SEARCH_UIDSET);
	p_array_init(&arg->value.seqset, args->pool, array_count(uids) + 1);
	array_append_array(&arg->value.seqset, uids);
	ctx = mailbox_search_init(t, args, NULL, wanted_fields, NULL);
	mail_search_args_unref(&args);
	return ctx;
}

static int leave_on_server_mark_seen(struct mailbox_transaction_context *t,
				     const ARRAY_TYPE(seq_range) *uids)
{
	struct mail_search_context *ctx;
	struct mail *mail;

	ctx = leave_on_server_search_uids(t, uids, 0);
	while (mailbox_search_next(ctx, &mail))
		mail_update_flags(mail, MODIFY_ADD, MAIL_SEEN);
	return mailbox_search_deinit(&ctx);
}

/* last_seen is kept to the hour, so that sessions that change nothing
   write nothing. */
static bool
leave_on_server_last_seen_stale(const struct leave_on_server_device *dev)
{
	return ioloop_time - dev->last_seen >= LEAVE_ON_SERVER_LAST_SEEN_PRECISION_SECS ||
		ioloop_time < dev->last_seen;
}

/* QUIT: the session's deletions and retrievals become the device's
   state, written in the transaction that expunges. */
static int leave_on_server_quit_update(struct leave_on_server_user *luser,
				       struct mailbox_transaction_context *t)
{
	struct leave_on_server_device *dev = luser->device;
	ARRAY_TYPE(seq_range) done;

	if (array_count(&luser->retrieved) == 0 &&
	    array_count(&luser->deleted) == 0 &&
	    !leave_on_server_last_seen_stale(dev)) {
		/* a check for new mail that took nothing: writing the state
		   would cost more than the rest of the session */
		luser->saved_at_quit = TRUE;
		return 0;
	}
	leave_on_server_device_reload(luser);
	t_array_init(&done, 8);
	seq_range_array_merge(&done, &luser->retrieved);
	seq_range_array_merge(&done, &luser->deleted);
	seq_range_array_remove_seq_range(&done, &luser->expunged);
	leave_on_server_device_add_done(dev, leave_on_server_today(), &done);
	seq_range_array_merge(&dev->hidden, &luser->deleted);

	if (luser->set->mark_seen && array_count(&luser->retrieved) > 0 &&
	    leave_on_server_mark_seen(t, &luser->retrieved) < 0)
		return -1;

	if (dev->uid_validity == 0) {
		struct mailbox_status status;

		mailbox_get_open_status(luser->box, STATUS_UIDVALIDITY,
					&status);
		dev->uid_validity = status.uidvalidity;
	}
	dev->last_seen = ioloop_time;
	leave_on_server_device_compact_now(luser);
	if (leave_on_server_state_save(t, dev) < 0) {
		if (array_count(&luser->deleted) > 0 ||
		    !leave_on_server_write_refused(luser->box))
			return -1;
		/* read-only and nothing DELEted: QUIT succeeds, and what
		   the device retrieved is listed to it again next time */
		e_debug(luser->event, "State of device %s not saved: %s",
			luser->set->device,
			mailbox_get_last_error(luser->box, NULL));
	}
	luser->saved_at_quit = TRUE;
	return 0;
}

static int leave_on_server_device_ensure(struct leave_on_server_user *luser,
					 struct mailbox *box)
{
	if (luser->device != NULL)
		return 0;
	if (leave_on_server_device_open(luser, box) < 0) {
		mail_storage_set_error(box->storage, MAIL_ERROR_TEMP,
			"Couldn't read the POP3 device's state");
		return -1;
	}
	return 0;
}

static int leave_on_server_mailbox_open(struct mailbox *box)
{
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(box);

	if (lbox->module_ctx.super.open(box) < 0)
		return -1;
	/* sdbox and mdbox open a mailbox they are creating (an account's
	   first INBOX) before it has the GUID that attributes are stored
	   under: create_box reads the state once it is done */
	if (box->creating)
		return 0;
	return leave_on_server_device_ensure(lbox->luser, box);
}

static int
leave_on_server_mailbox_create(struct mailbox *box,
			       const struct mailbox_update *update,
			       bool directory)
{
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(box);

	if (lbox->module_ctx.super.create_box(box, update, directory) < 0)
		return -1;
	/* opened while it was being created: the open above skipped it */
	if (!box->opened)
		return 0;
	return leave_on_server_device_ensure(lbox->luser, box);
}

/* The POP3 listing is the one search made before the session has its
   transaction. */
static bool leave_on_server_is_listing(struct leave_on_server_user *luser)
{
	return luser->client != NULL && luser->client->trans == NULL &&
		!luser->client->quit_seen && luser->device != NULL &&
		!luser->cleaning;
}

static struct mail_search_context *
leave_on_server_search_init(struct mailbox_transaction_context *t,
			    struct mail_search_args *args,
			    const enum mail_sort_type *sort_program,
			    enum mail_fetch_field wanted_fields,
			    struct mailbox_header_lookup_ctx *wanted_headers)
{
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(t->box);
	struct leave_on_server_user *luser = lbox->luser;
	struct mail_search_context *ctx;
	struct mail_search_arg *arg;
	ARRAY_TYPE(seq_range) listed;
	const struct seq_range *range;
	uint32_t seq1, seq2;

	if (leave_on_server_is_listing(luser)) T_BEGIN {
		t_array_init(&listed, 8);
		seq_range_array_merge(&listed, &luser->device->hidden);
		if (luser->set->new_only) {
			leave_on_server_device_get_done(luser->device,
							(uint32_t)-1, &listed);
		}
		if (array_count(&listed) > 0) {
			/* Only the rest, so that a returning device's
			   listing costs what its new mail costs. As
			   sequences: the pop3 process has already turned
			   its own sets into them, and only a sequence set
			   narrows the range the search walks; a UID set
			   would be tested against every message. */
			seq_range_array_invert(&listed, 1, (uint32_t)-1);
			arg = p_new(args->pool, struct mail_search_arg, 1);
			arg->type = SEARCH_SEQSET;
			p_array_init(&arg->value.seqset, args->pool,
				     array_count(&listed) + 1);
			array_foreach(&listed, range) {
				mailbox_get_seq_range(t->box, range->seq1,
						      range->seq2,
						      &seq1, &seq2);
				if (seq1 != 0) {
					seq_range_array_add_range(
						&arg->value.seqset, seq1, seq2);
				}
			}
			/* an empty set matches nothing */
			arg->next = args->args;
			args->args = arg;
		}
	} T_END;
	ctx = lbox->module_ctx.super.search_init(t, args, sort_program,
						 wanted_fields, wanted_headers);
	if (leave_on_server_is_listing(luser)) {
		luser->listing = ctx;
		array_clear(&luser->listed_seqs);
	}
	return ctx;
}

static bool
leave_on_server_search_next_nonblock(struct mail_search_context *ctx,
				     struct mail **mail_r, bool *tryagain_r)
{
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(ctx->transaction->box);
	struct leave_on_server_user *luser = lbox->luser;

	if (!lbox->module_ctx.super.search_next_nonblock(ctx, mail_r,
							 tryagain_r))
		return FALSE;
	if (ctx == luser->listing)
		seq_range_array_add(&luser->listed_seqs, (*mail_r)->seq);
	return TRUE;
}

static int leave_on_server_search_deinit(struct mail_search_context *ctx)
{
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(ctx->transaction->box);
	struct leave_on_server_user *luser = lbox->luser;
	struct client *client = luser->client;

	if (ctx == luser->listing) {
		luser->listing = NULL;
		/* Without pop3_deleted_flag the pop3 process takes the
		   listing to be sequences 1..n, and UIDL and QUIT would then
		   look at the wrong messages: give it the real ones. (With
		   the flag it collects them itself.) */
		if (!array_is_created(&client->all_seqs)) {
			i_array_init(&client->all_seqs,
				     array_count(&luser->listed_seqs) + 1);
			array_append_array(&client->all_seqs,
					   &luser->listed_seqs);
			luser->all_seqs_set = TRUE;
		} else if (luser->all_seqs_set) {
			/* the pop3 process lists again after a failure */
			array_clear(&client->all_seqs);
			array_append_array(&client->all_seqs,
					   &luser->listed_seqs);
		}
	}
	return lbox->module_ctx.super.search_deinit(ctx);
}

static int
leave_on_server_transaction_commit(struct mailbox_transaction_context *t,
				   struct mail_transaction_commit_changes *changes_r)
{
	struct mailbox *box = t->box;
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(box);
	struct leave_on_server_user *luser = lbox->luser;
	int ret = 0;

	/* QUIT commits the session's transaction, which the pop3 process
	   has already taken out of client->trans; the plugin's own
	   transactions are external */
	if (luser->client != NULL && luser->client->quit_seen &&
	    luser->client->trans == NULL && !luser->saved_at_quit &&
	    !luser->cleaning && luser->device != NULL &&
	    (t->flags & MAILBOX_TRANSACTION_FLAG_EXTERNAL) == 0 &&
	    !mailbox_is_readonly(box)) T_BEGIN {
		ret = leave_on_server_quit_update(luser, t);
	} T_END;
	/* copies first: then a crash leaves mail twice, never nowhere */
	if (ret == 0 && leave_on_server_move_commit(luser) < 0) {
		mail_storage_set_error(box->storage, MAIL_ERROR_TEMP,
			"Couldn't move messages to leave_on_server_move_to");
		ret = -1;
	}
	if (ret < 0) {
		leave_on_server_move_rollback(luser);
		lbox->module_ctx.super.transaction_rollback(t);
		return -1;
	}
	return lbox->module_ctx.super.transaction_commit(t, changes_r);
}

static void
leave_on_server_transaction_rollback(struct mailbox_transaction_context *t)
{
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(t->box);

	leave_on_server_move_rollback(lbox->luser);
	lbox->module_ctx.super.transaction_rollback(t);
}

void leave_on_server_mailbox_allocated(struct mailbox *box)
{
	struct leave_on_server_user *luser =
		leave_on_server_user_get(box->storage->user);
	struct mailbox_vfuncs *v = box->vlast;
	struct leave_on_server_mailbox *lbox;

	if (luser == NULL || (box->flags & MAILBOX_FLAG_POP3_SESSION) == 0)
		return;

	lbox = p_new(box->pool, struct leave_on_server_mailbox, 1);
	lbox->module_ctx.super = *v;
	box->vlast = &lbox->module_ctx.super;
	lbox->luser = luser;
	v->open = leave_on_server_mailbox_open;
	v->create_box = leave_on_server_mailbox_create;
	v->search_init = leave_on_server_search_init;
	v->search_next_nonblock = leave_on_server_search_next_nonblock;
	v->search_deinit = leave_on_server_search_deinit;
	v->transaction_commit = leave_on_server_transaction_commit;
	v->transaction_rollback = leave_on_server_transaction_rollback;
	MODULE_CONTEXT_SET(box, leave_on_server_storage_module, lbox);
}

static void leave_on_server_mail_expunge(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct leave_on_server_mail *lmail = LEAVE_ON_SERVER_MAIL_CONTEXT(mail);
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(_mail->box);
	struct leave_on_server_user *luser = lbox->luser;

	if (!luser->cleaning &&
	    luser->set->policy != LEAVE_ON_SERVER_POLICY_DELETE) {
		/* DELE under a keeping policy: only this device stops
		   seeing it */
		seq_range_array_add(&luser->deleted, _mail->uid);
		return;
	}
	if (luser->set->move_to[0] != '\0' &&
	    leave_on_server_move_copy(luser, _mail) < 0) {
		/* not copied, so not expunged: the commit fails */
		return;
	}
	if (!luser->cleaning)
		seq_range_array_add(&luser->expunged, _mail->uid);
	lmail->outer_expunge(_mail);
}

/* Where the wrapper chain reached this plugin's place in it: on to the
   wrappers added after this plugin's hook, and to the storage. */
static void leave_on_server_mail_expunge_inner(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct leave_on_server_mail *lmail = LEAVE_ON_SERVER_MAIL_CONTEXT(mail);

	lmail->module_ctx.super.expunge(_mail);
}

static int
leave_on_server_mail_get_stream(struct mail *_mail, bool get_body,
				struct message_size *hdr_size,
				struct message_size *body_size,
				struct istream **stream_r)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct leave_on_server_mail *lmail = LEAVE_ON_SERVER_MAIL_CONTEXT(mail);
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(_mail->box);

	if (lmail->module_ctx.super.get_stream(_mail, get_body, hdr_size, body_size,
				    stream_r) < 0)
		return -1;
	/* the pop3 process names the command that reads the mail; TOP
	   only peeks */
	if (mail->get_stream_reason != NULL &&
	    strcmp(mail->get_stream_reason, "RETR") == 0)
		seq_range_array_add(&lbox->luser->retrieved, _mail->uid);
	return 0;
}

static void
leave_on_server_mail_update_flags(struct mail *_mail,
				  enum modify_type modify_type,
				  enum mail_flags flags)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct leave_on_server_mail *lmail = LEAVE_ON_SERVER_MAIL_CONTEXT(mail);
	struct leave_on_server_mailbox *lbox =
		LEAVE_ON_SERVER_STORAGE_CONTEXT(_mail->box);
	struct client *client = lbox->luser->client;

	if (modify_type == MODIFY_ADD &&
	    (!lbox->luser->set->mark_seen || client == NULL ||
	     !client->quit_seen)) {
		/* leave_on_server_mark_seen=no: RETR leaves mail unread for
		   IMAP clients. And nothing changes before QUIT, although
		   the pop3 process would set \Seen for RETRed mail when a
		   session just ends. */
		flags &= ENUM_NEGATE(MAIL_SEEN);
		if (flags == 0)
			return;
	}
	lmail->module_ctx.super.update_flags(_mail, modify_type, flags);
}

void leave_on_server_mail_allocated(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct mail_vfuncs *v = mail->vlast;
	struct leave_on_server_mail *lmail;

	if (LEAVE_ON_SERVER_STORAGE_CONTEXT(_mail->box) == NULL)
		return;

	lmail = p_new(mail->pool, struct leave_on_server_mail, 1);
	lmail->module_ctx.super = *v;
	mail->vlast = &lmail->module_ctx.super;
	v->get_stream = leave_on_server_mail_get_stream;
	v->update_flags = leave_on_server_mail_update_flags;
	/* expunge goes outside every wrapper made so far, not just the
	   last one; wrappers added after this hook stay inside it */
	v->expunge = leave_on_server_mail_expunge_inner;
	lmail->outer_expunge = mail->v.expunge;
	mail->v.expunge = leave_on_server_mail_expunge;
	MODULE_CONTEXT_SET(mail, leave_on_server_mail_module, lmail);
}
