#ifndef LEAVE_ON_SERVER_STATE_H
#define LEAVE_ON_SERVER_STATE_H

#include "seq-range-array.h"

struct mailbox;
struct mailbox_transaction_context;

/* What one device has done with the mailbox, kept as a private mailbox
   attribute of INBOX so that dsync and replication carry it. UID sets
   are ranges, so a device that fetched everything costs a few bytes
   whatever the size of the mailbox. */
struct leave_on_server_day {
	/* days since 1970-01-01, UTC */
	uint32_t day;
	ARRAY_TYPE(seq_range) uids;
};

struct leave_on_server_device {
	const char *name;
	uint32_t uid_validity;
	time_t last_seen;
	/* DELEted under a keeping policy: never listed to this device again */
	ARRAY_TYPE(seq_range) hidden;
	/* retrieved or DELEted in a session that ended with QUIT, by the
	   day it happened */
	ARRAY(struct leave_on_server_day) days;
};
ARRAY_DEFINE_TYPE(leave_on_server_device, struct leave_on_server_device *);

/* The attribute key prefix. It is under Dovecot's pvt/ so that IMAP
   clients (GETMETADATA/SETMETADATA) can neither see nor change it, while
   dsync, which copies every attribute, still carries it. */
#define LEAVE_ON_SERVER_ATTR_PREFIX \
	"vendor/vendor.dovecot/pvt/leave-on-server/device/"

#define LEAVE_ON_SERVER_DAY(t) ((uint32_t)((t) / (24*60*60)))

struct leave_on_server_device *
leave_on_server_device_new(pool_t pool, const char *name);
/* Parses an attribute value. Returns 0, or -1 with error_r if the value
   is damaged. */
int leave_on_server_device_parse(pool_t pool, const char *name,
				 const char *value,
				 struct leave_on_server_device **dev_r,
				 const char **error_r);
const char *leave_on_server_device_format(const struct leave_on_server_device *dev);

/* Records uids as done by the device on the given day. */
void leave_on_server_device_add_done(struct leave_on_server_device *dev,
				     uint32_t day,
				     const ARRAY_TYPE(seq_range) *uids);
/* Adds to dest every UID the device has retrieved or deleted on or
   before last_day (all of them for (uint32_t)-1). */
void leave_on_server_device_get_done(const struct leave_on_server_device *dev,
				     uint32_t last_day,
				     ARRAY_TYPE(seq_range) *dest);
/* Keeps the state small: forgets UIDs below lowest_uid (they are gone
   from the mailbox, and UIDs are never reused) and folds days older than
   fold_before into one, dated with the latest of them so that nothing
   expires earlier than it would have. */
void leave_on_server_device_compact(struct leave_on_server_device *dev,
				    uint32_t lowest_uid, uint32_t fold_before);
/* Merges what another session of the same device wrote meanwhile. */
void leave_on_server_device_merge(struct leave_on_server_device *dest,
				  const struct leave_on_server_device *src);

/* Reads one device's state from box. Returns 1 if found, 0 if the
   device is new, -1 on a storage error (error_r set). A damaged value
   returns 1 with an empty state and a description in damage_r: the
   device then gets everything listed again, which loses nothing. */
int leave_on_server_state_load(struct mailbox *box, pool_t pool,
			       const char *name,
			       struct leave_on_server_device **dev_r,
			       const char **damage_r, const char **error_r);
/* Reads every device's state. Damaged ones are named in damaged_r and
   listed with an empty state: they count as having retrieved nothing. */
int leave_on_server_state_load_all(struct mailbox *box, pool_t pool,
				   ARRAY_TYPE(leave_on_server_device) *devs,
				   ARRAY_TYPE(const_string) *damaged_r,
				   const char **error_r);
int leave_on_server_state_save(struct mailbox_transaction_context *t,
			       const struct leave_on_server_device *dev);
int leave_on_server_state_forget(struct mailbox_transaction_context *t,
				 const char *name);

#endif
