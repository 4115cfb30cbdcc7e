#ifndef LEAVE_ON_SERVER_STORAGE_H
#define LEAVE_ON_SERVER_STORAGE_H

#include "seq-range-array.h"
#include "mail-storage.h"

struct mailbox;
struct mail;
struct leave_on_server_user;

void leave_on_server_mailbox_allocated(struct mailbox *box);
void leave_on_server_mail_allocated(struct mail *mail);

/* Searches the messages with the given UIDs, in UID order. */
struct mail_search_context *
leave_on_server_search_uids(struct mailbox_transaction_context *t,
			    const ARRAY_TYPE(seq_range) *uids,
			    enum mail_fetch_field wanted_fields);

#endif
