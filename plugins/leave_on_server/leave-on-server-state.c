/* Per-device state: its text form and where it is stored.

   The value of the attribute is one line:
     1 <uidvalidity> <last seen, unix time> H=<uidset> D<day>=<uidset>...
   with IMAP sequence-set syntax for the UID sets ("1:500,502"). */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "str-sanitize.h"
#include "imap-util.h"
#include "imap-seqset.h"
#include "mail-storage.h"
#include "mailbox-attribute.h"
#include "leave-on-server-state.h"

#define LEAVE_ON_SERVER_STATE_VERSION "1"

struct leave_on_server_device *
leave_on_server_device_new(pool_t pool, const char *name)
{
	struct leave_on_server_device *dev;

	dev = p_new(pool, struct leave_on_server_device, 1);
	dev->name = p_strdup(pool, name);
	p_array_init(&dev->hidden, pool, 4);
	p_array_init(&dev->days, pool, 4);
	return dev;
}

static struct leave_on_server_day *
leave_on_server_device_day(struct leave_on_server_device *dev, uint32_t day)
{
	struct leave_on_server_day *d;
	pool_t pool = array_get_pool(&dev->days);
	unsigned int i, count;

	d = array_get_modifiable(&dev->days, &count);
	for (i = 0; i < count; i++) {
		if (d[i].day == day)
			return &d[i];
		if (d[i].day > day)
			break;
	}
	d = array_insert_space(&dev->days, i);
	d->day = day;
	p_array_init(&d->uids, pool, 4);
	return d;
}

static int
leave_on_server_parse_set(const char *str, ARRAY_TYPE(seq_range) *dest)
{
	if (str[0] == '\0')
		return 0;
	/* '*' has no meaning in stored state */
	return imap_seq_set_nostar_parse(str, dest);
}

int leave_on_server_device_parse(pool_t pool, const char *name,
				 const char *value,
				 struct leave_on_server_device **dev_r,
				 const char **error_r)
{
	struct leave_on_server_device *dev;
	const char *const *args = t_strsplit_spaces(value, " ");
	struct leave_on_server_day *d;
	const char *p;
	uint32_t day;
	unsigned int i;

	dev = leave_on_server_device_new(pool, name);
	if (str_array_length(args) < 4 ||
	    strcmp(args[0], LEAVE_ON_SERVER_STATE_VERSION) != 0) {
		*error_r = "unknown format";
		return -1;
	}
	if (str_to_uint32(args[1], &dev->uid_validity) < 0 ||
	    str_to_time(args[2], &dev->last_seen) < 0) {
		*error_r = "bad uidvalidity or time";
		return -1;
	}
	if (!str_begins(args[3], "H=") ||
	    leave_on_server_parse_set(args[3] + 2, &dev->hidden) < 0) {
		*error_r = t_strdup_printf("bad hidden set '%s'", args[3]);
		return -1;
	}
	for (i = 4; args[i] != NULL; i++) {
		p = strchr(args[i], '=');
		if (args[i][0] != 'D' || p == NULL ||
		    str_to_uint32(t_strdup_until(args[i] + 1, p), &day) < 0) {
			*error_r = t_strdup_printf("bad day '%s'", args[i]);
			return -1;
		}
		d = leave_on_server_device_day(dev, day);
		if (leave_on_server_parse_set(p + 1, &d->uids) < 0) {
			*error_r = t_strdup_printf("bad day '%s'", args[i]);
			return -1;
		}
	}
	*dev_r = dev;
	return 0;
}

const char *
leave_on_server_device_format(const struct leave_on_server_device *dev)
{
	const struct leave_on_server_day *d;
	string_t *str = t_str_new(128);

	str_printfa(str, LEAVE_ON_SERVER_STATE_VERSION" %u %"PRIdTIME_T" H=",
		    dev->uid_validity, dev->last_seen);
	imap_write_seq_range(str, &dev->hidden);
	array_foreach(&dev->days, d) {
		if (array_count(&d->uids) == 0)
			continue;
		str_printfa(str, " D%u=", d->day);
		imap_write_seq_range(str, &d->uids);
	}
	return str_c(str);
}

void leave_on_server_device_add_done(struct leave_on_server_device *dev,
				     uint32_t day,
				     const ARRAY_TYPE(seq_range) *uids)
{
	struct leave_on_server_day *d;

	if (array_count(uids) == 0)
		return;
	d = leave_on_server_device_day(dev, day);
	seq_range_array_merge(&d->uids, uids);
}

void leave_on_server_device_get_done(const struct leave_on_server_device *dev,
				     uint32_t last_day,
				     ARRAY_TYPE(seq_range) *dest)
{
	const struct leave_on_server_day *d;

	array_foreach(&dev->days, d) {
		if (d->day <= last_day)
			seq_range_array_merge(dest, &d->uids);
	}
}

void leave_on_server_device_compact(struct leave_on_server_device *dev,
				    uint32_t lowest_uid, uint32_t fold_before)
{
	struct leave_on_server_day *d;
	unsigned int i;

	if (lowest_uid > 1)
		seq_range_array_remove_range(&dev->hidden, 1, lowest_uid - 1);
	for (i = 0; i < array_count(&dev->days); ) {
		d = array_idx_modifiable(&dev->days, i);
		if (lowest_uid > 1)
			seq_range_array_remove_range(&d->uids, 1, lowest_uid - 1);
		if (array_count(&d->uids) == 0) {
			array_delete(&dev->days, i, 1);
			continue;
		}
		if (d->day < fold_before && i + 1 < array_count(&dev->days)) {
			struct leave_on_server_day *next =
				array_idx_modifiable(&dev->days, i + 1);
			if (next->day < fold_before) {
				/* fold this day into the next (later) one */
				seq_range_array_merge(&next->uids, &d->uids);
				array_delete(&dev->days, i, 1);
				continue;
			}
		}
		i++;
	}
}

void leave_on_server_device_merge(struct leave_on_server_device *dest,
				  const struct leave_on_server_device *src)
{
	const struct leave_on_server_day *d;

	if (src->uid_validity != dest->uid_validity)
		return;
	seq_range_array_merge(&dest->hidden, &src->hidden);
	array_foreach(&src->days, d)
		leave_on_server_device_add_done(dest, d->day, &d->uids);
	if (src->last_seen > dest->last_seen)
		dest->last_seen = src->last_seen;
}

int leave_on_server_state_load(struct mailbox *box, pool_t pool,
			       const char *name,
			       struct leave_on_server_device **dev_r,
			       const char **damage_r, const char **error_r)
{
	struct mail_attribute_value value;
	const char *error;
	int ret;

	*damage_r = NULL;
	ret = mailbox_attribute_get(box, MAIL_ATTRIBUTE_TYPE_PRIVATE,
		t_strconcat(LEAVE_ON_SERVER_ATTR_PREFIX, name, NULL), &value);
	if (ret < 0) {
		*error_r = mailbox_get_last_internal_error(box, NULL);
		return -1;
	}
	if (ret == 0 || value.value == NULL) {
		*dev_r = leave_on_server_device_new(pool, name);
		return 0;
	}
	if (leave_on_server_device_parse(pool, name, value.value,
					 dev_r, &error) < 0) {
		*damage_r = t_strdup_printf("%s (value: %s)", error,
					    str_sanitize_utf8(value.value, 80));
		*dev_r = leave_on_server_device_new(pool, name);
	}
	return 1;
}

int leave_on_server_state_load_all(struct mailbox *box, pool_t pool,
				   ARRAY_TYPE(leave_on_server_device) *devs,
				   ARRAY_TYPE(const_string) *damaged_r,
				   const char **error_r)
{
	struct mailbox_attribute_iter *iter;
	struct leave_on_server_device *dev;
	ARRAY_TYPE(const_string) names;
	const char *key, *damage;
	int ret = 0;

	t_array_init(&names, 8);
	iter = mailbox_attribute_iter_init(box, MAIL_ATTRIBUTE_TYPE_PRIVATE,
					   LEAVE_ON_SERVER_ATTR_PREFIX);
	while ((key = mailbox_attribute_iter_next(iter)) != NULL) {
		key = t_strdup(key);
		array_push_back(&names, &key);
	}
	if (mailbox_attribute_iter_deinit(&iter) < 0) {
		*error_r = mailbox_get_last_internal_error(box, NULL);
		return -1;
	}
	array_foreach_elem(&names, key) {
		ret = leave_on_server_state_load(box, pool, key, &dev,
						 &damage, error_r);
		if (ret < 0)
			return -1;
		if (ret == 0)
			continue; /* forgotten meanwhile */
		if (damage != NULL) {
			/* it still counts as a device, one that has retrieved
			   nothing, so nothing expires on its account */
			const char *name = p_strdup(pool, key);
			array_push_back(damaged_r, &name);
		}
		array_push_back(devs, &dev);
	}
	return 0;
}

int leave_on_server_state_save(struct mailbox_transaction_context *t,
			       const struct leave_on_server_device *dev)
{
	struct mail_attribute_value value;

	i_zero(&value);
	value.value = leave_on_server_device_format(dev);
	value.last_change = dev->last_seen;
	return mailbox_attribute_set(t, MAIL_ATTRIBUTE_TYPE_PRIVATE,
		t_strconcat(LEAVE_ON_SERVER_ATTR_PREFIX, dev->name, NULL),
		&value);
}

int leave_on_server_state_forget(struct mailbox_transaction_context *t,
				 const char *name)
{
	return mailbox_attribute_unset(t, MAIL_ATTRIBUTE_TYPE_PRIVATE,
		t_strconcat(LEAVE_ON_SERVER_ATTR_PREFIX, name, NULL));
}
