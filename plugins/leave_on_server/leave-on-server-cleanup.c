/* Expiry and quota cleanup. They run at the end of a POP3 session that
   ended with QUIT, like Dovecot's autoexpunge, so the admin needs no
   cron job; the client has been disconnected by then. */

#include "lib.h"
#include "array.h"
#include "mail-storage.h"
#include "leave-on-server-settings.h"
#include "leave-on-server-state.h"
#include "leave-on-server-user.h"
#include "leave-on-server-quota.h"
#include "leave-on-server-storage.h"
#include "leave-on-server-cleanup.h"

/* UIDs that every device (all=TRUE) or some device has retrieved on or
   before last_day. No device, no UID. */
static void
leave_on_server_done_by(const ARRAY_TYPE(leave_on_server_device) *devs,
			uint32_t last_day, bool all,
			ARRAY_TYPE(seq_range) *dest)
{
	struct leave_on_server_device *const *devp;
	ARRAY_TYPE(seq_range) done;
	bool first = TRUE;

	array_foreach(devs, devp) {
		t_array_init(&done, 8);
		leave_on_server_device_get_done(*devp, last_day, &done);
		if (first || !all)
			seq_range_array_merge(dest, &done);
		else
			seq_range_array_intersect(dest, &done);
		first = FALSE;
	}
}

/* Expunges the messages in uids, oldest first; with a byte budget, stops
   once that many bytes are gone. Returns how many went, or -1. */
static int
leave_on_server_expunge(struct leave_on_server_user *luser,
			const ARRAY_TYPE(seq_range) *uids, uint64_t budget,
			uint64_t *bytes_r)
{
	struct mailbox_transaction_context *t;
	struct mail_search_context *ctx;
	struct mail *mail;
	uoff_t size;
	int count = 0, ret = 0;

	*bytes_r = 0;
	luser->cleaning = TRUE;
	t = mailbox_transaction_begin(luser->box, 0, __func__);
	ctx = leave_on_server_search_uids(t, uids, budget == 0 ? 0 :
					  MAIL_FETCH_VIRTUAL_SIZE);
	while (mailbox_search_next(ctx, &mail)) {
		if (budget > 0) {
			if (*bytes_r >= budget)
				break;
			if (mail_get_virtual_size(mail, &size) < 0) {
				ret = -1;
				break;
			}
			*bytes_r += size;
		}
		mail_expunge(mail);
		count++;
	}
	if (mailbox_search_deinit(&ctx) < 0)
		ret = -1;
	if (ret < 0)
		mailbox_transaction_rollback(&t);
	else if (mailbox_transaction_commit(&t) < 0)
		ret = -1;
	luser->cleaning = FALSE;
	if (ret < 0) {
		enum mail_error error;
		const char *errstr =
			mailbox_get_last_internal_error(luser->box, &error);

		if (error == MAIL_ERROR_PERM) {
			/* a read-only session: the next writable one
			   cleans up */
			e_info(luser->event, "Cleanup not done: %s", errstr);
			return 0;
		}
		e_error(luser->event, "Cleanup failed: %s", errstr);
		return -1;
	}
	return count;
}

static int leave_on_server_cleanup_real(struct leave_on_server_user *luser)
{
	const struct leave_on_server_settings *set = luser->set;
	ARRAY_TYPE(leave_on_server_device) devs;
	ARRAY_TYPE(const_string) damaged;
	ARRAY_TYPE(seq_range) uids;
	const char *name, *error;
	uint32_t today = leave_on_server_today();
	uint64_t excess = 0, bytes;
	int count;

	t_array_init(&devs, 8);
	t_array_init(&damaged, 2);
	if (leave_on_server_state_load_all(luser->box, pool_datastack_create(),
					   &devs, &damaged, &error) < 0) {
		e_error(luser->event, "Reading the devices' state failed: %s",
			error);
		return -1;
	}
	array_foreach_elem(&damaged, name) {
		e_warning(luser->event, "The state of device %s is damaged: "
			  "nothing expires until it retrieves its mail again",
			  name);
	}

	t_array_init(&uids, 8);
	if (set->policy == LEAVE_ON_SERVER_POLICY_EXPIRE) {
		if (today < set->expire_days)
			return 0;
		leave_on_server_done_by(&devs, today - set->expire_days,
			set->expire_from == LEAVE_ON_SERVER_EXPIRE_FROM_ALL,
			&uids);
	} else {
		if (leave_on_server_quota_excess(luser->user, set->quota_high,
						 set->quota_low, &excess,
						 &error) < 0) {
			e_error(luser->event, "Quota lookup failed: %s", error);
			return -1;
		}
		if (excess == 0)
			return 0;
		leave_on_server_done_by(&devs, (uint32_t)-1, TRUE, &uids);
	}
	if (array_count(&uids) == 0)
		return 0;

	count = leave_on_server_expunge(luser, &uids, excess, &bytes);
	if (count < 0)
		return -1;
	if (count == 0)
		return 0;
	if (set->policy == LEAVE_ON_SERVER_POLICY_EXPIRE) {
		e_info(luser->event, "Expired %d message(s) retrieved %u or "
		       "more days ago%s", count, set->expire_days,
		       set->move_to[0] == '\0' ? "" :
		       t_strdup_printf(" (moved to %s)", set->move_to));
	} else {
		e_info(luser->event, "Quota above %u%%: removed %d message(s), "
		       "%"PRIu64" bytes, that every device has retrieved%s",
		       set->quota_high, count, bytes,
		       set->move_to[0] == '\0' ? "" :
		       t_strdup_printf(" (moved to %s)", set->move_to));
	}
	return 0;
}

int leave_on_server_cleanup(struct leave_on_server_user *luser)
{
	int ret;

	if (luser->set->policy != LEAVE_ON_SERVER_POLICY_EXPIRE &&
	    luser->set->policy != LEAVE_ON_SERVER_POLICY_QUOTA)
		return 0;
	T_BEGIN {
		ret = leave_on_server_cleanup_real(luser);
	} T_END;
	return ret;
}
