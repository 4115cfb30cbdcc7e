#ifndef LEAVE_ON_SERVER_USER_H
#define LEAVE_ON_SERVER_USER_H

#include "module-context.h"
#include "seq-range-array.h"
#include "mail-user.h"

#define LEAVE_ON_SERVER_USER_CONTEXT(obj) \
	MODULE_CONTEXT(obj, leave_on_server_user_module)

struct client;
struct leave_on_server_settings;
struct leave_on_server_device;

/* Exists only for POP3 sessions: IMAP, LMTP and doveadm see the mailbox
   as it is. */
struct leave_on_server_user {
	union mail_user_module_context module_ctx;
	struct mail_user *user;
	struct event *event;
	const struct leave_on_server_settings *set;

	/* the POP3 session, once the pop3 process has created it */
	struct client *client;
	/* its INBOX, once opened, and the device's state read from it */
	struct mailbox *box;
	struct leave_on_server_device *device;

	/* the search that builds the POP3 listing, and the sequences it
	   returned */
	struct mail_search_context *listing;
	ARRAY_TYPE(seq_range) listed_seqs;

	/* what this session did, applied only at QUIT (RFC 1939's UPDATE
	   state): UIDs retrieved with RETR, and UIDs DELEted that the
	   policy keeps */
	ARRAY_TYPE(seq_range) retrieved;
	ARRAY_TYPE(seq_range) deleted;
	/* UIDs DELEted under the delete policy, which QUIT expunges. The
	   state, in the attribute dict, commits before the expunges do, so
	   these are never recorded as done: if the expunge is lost, the
	   device is listed them again instead of never */
	ARRAY_TYPE(seq_range) expunged;

	/* leave_on_server_move_to: where expunged mail goes, while a
	   transaction that expunges is open */
	struct mailbox *move_box;
	struct mailbox_transaction_context *move_trans;
	bool move_failed:1;

	/* client->all_seqs was set from listed_seqs */
	bool all_seqs_set:1;
	/* the state was written by the QUIT's commit */
	bool saved_at_quit:1;
	/* expunges now come from expiry or quota cleanup, not from DELE */
	bool cleaning:1;
};

extern MODULE_CONTEXT_DEFINE(leave_on_server_user_module,
			     &mail_user_module_register);
extern struct event_category event_category_leave_on_server;

void leave_on_server_mail_user_created(struct mail_user *user);

/* The context of a POP3 user, or NULL elsewhere. */
struct leave_on_server_user *leave_on_server_user_get(struct mail_user *user);

/* Days since the epoch, now. */
uint32_t leave_on_server_today(void);

#endif
