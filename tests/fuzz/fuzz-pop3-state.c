/* Fuzzes leave_on_server's per-device state: the attribute value a
   device's POP3 sessions read and write.

   Input: a state value, optionally a NUL and a second value, then
   optionally a NUL and bytes for the parameters below.

   Checked for a value that parses:
   - formatting it and parsing that gives the same state, and formatting
     again gives the same text (what a session writes back is what the
     next one reads);
   - compacting keeps what the header promises: UIDs below the lowest
     are forgotten, no other UID is, none moves to an earlier day (mail
     never expires earlier), and at most one day is left before
     fold_before;
   - merging a second state of the same mailbox gives the union of both,
     day by day;
   - the compacted and merged states round-trip too. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "imap-util.h"
#include "seq-range-array.h"
#include "../../plugins/leave_on_server/leave-on-server-state.h"
#include "fuzz-common.h"

#include <stdio.h>

#define FUZZ_DEVICE_NAME "fuzz-device"

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

static const char *fuzz_set_str(const ARRAY_TYPE(seq_range) *set)
{
	string_t *str = t_str_new(64);

	imap_write_seq_range(str, set);
	return str_c(str);
}

static bool fuzz_sets_equal(const ARRAY_TYPE(seq_range) *s1,
			    const ARRAY_TYPE(seq_range) *s2)
{
	return array_count(s1) == array_count(s2) &&
		(array_count(s1) == 0 ||
		 memcmp(array_front(s1), array_front(s2),
			array_count(s1) * sizeof(struct seq_range)) == 0);
}

/* Every UID done on or before last_day. */
static void fuzz_done(const struct leave_on_server_device *dev,
		      uint32_t last_day, ARRAY_TYPE(seq_range) *dest)
{
	t_array_init(dest, 8);
	leave_on_server_device_get_done(dev, last_day, dest);
}

/* Days with UIDs, ascending: formatting drops the empty ones. */
static void fuzz_check_days(const struct leave_on_server_device *dev,
			    bool allow_empty)
{
	const struct leave_on_server_day *d;
	unsigned int i, count;

	d = array_get(&dev->days, &count);
	for (i = 0; i < count; i++) {
		FUZZ_ASSERT(i == 0 || d[i].day > d[i-1].day);
		FUZZ_ASSERT(allow_empty || array_count(&d[i].uids) > 0);
	}
}

/* The same state, as far as a session can tell. */
static bool fuzz_devices_equal(const struct leave_on_server_device *d1,
			       const struct leave_on_server_device *d2)
{
	const struct leave_on_server_day *day1, *day2;
	unsigned int i1 = 0, i2 = 0, count1, count2;

	if (d1->uid_validity != d2->uid_validity ||
	    d1->last_seen != d2->last_seen ||
	    !fuzz_sets_equal(&d1->hidden, &d2->hidden))
		return FALSE;
	day1 = array_get(&d1->days, &count1);
	day2 = array_get(&d2->days, &count2);
	for (;;) {
		while (i1 < count1 && array_count(&day1[i1].uids) == 0)
			i1++;
		while (i2 < count2 && array_count(&day2[i2].uids) == 0)
			i2++;
		if (i1 == count1 || i2 == count2)
			return i1 == count1 && i2 == count2;
		if (day1[i1].day != day2[i2].day ||
		    !fuzz_sets_equal(&day1[i1].uids, &day2[i2].uids))
			return FALSE;
		i1++; i2++;
	}
}

/* Formats the state and parses it back: the same state and text. */
static void fuzz_check_roundtrip(const char *what,
				 const struct leave_on_server_device *dev)
{
	struct leave_on_server_device *dev2;
	const char *text, *text2, *error;
	pool_t pool;

	text = leave_on_server_device_format(dev);
	pool = pool_allocfree_create("fuzz state roundtrip");
	if (leave_on_server_device_parse(pool, FUZZ_DEVICE_NAME, text, &dev2,
					 &error) < 0)
		fuzz_fail("%s: the formatted state \"%s\" doesn't parse: %s",
			  what, text, error);
	FUZZ_ASSERT(strcmp(dev2->name, FUZZ_DEVICE_NAME) == 0);
	fuzz_check_days(dev2, FALSE);
	if (!fuzz_devices_equal(dev, dev2))
		fuzz_fail("%s: \"%s\" parses into a different state", what, text);
	text2 = leave_on_server_device_format(dev2);
	if (strcmp(text, text2) != 0)
		fuzz_fail("%s: formatted \"%s\", then \"%s\"", what, text, text2);
	pool_unref(&pool);
}

/* Returns the parsed device, or NULL if the value is refused. */
static struct leave_on_server_device *
fuzz_parse(pool_t pool, const char *value)
{
	struct leave_on_server_device *dev = NULL;
	const char *error = NULL;

	if (leave_on_server_device_parse(pool, FUZZ_DEVICE_NAME, value, &dev,
					 &error) < 0) {
		FUZZ_ASSERT(error != NULL && *error != '\0');
		return NULL;
	}
	FUZZ_ASSERT(dev != NULL);
	fuzz_check_days(dev, TRUE);
	return dev;
}

/* Returns the first (or last) day of the state, 0 if it has none. */
static uint32_t fuzz_edge_day(const struct leave_on_server_device *dev,
			      bool last)
{
	const struct leave_on_server_day *d;
	unsigned int count;

	d = array_get(&dev->days, &count);
	return count == 0 ? 0 : d[last ? count - 1 : 0].day;
}

static bool fuzz_has_day(const ARRAY_TYPE(uint32_t) *days, uint32_t day)
{
	uint32_t d;

	array_foreach_elem(days, d) {
		if (d == day)
			return TRUE;
	}
	return FALSE;
}

static void fuzz_check_compact(struct leave_on_server_device *dev,
			       struct fuzz_reader *reader)
{
	ARRAY_TYPE(seq_range) before_all, after_all, hidden_before, set, want;
	ARRAY(ARRAY_TYPE(seq_range)) done_by_day;
	ARRAY_TYPE(uint32_t) days;
	ARRAY_TYPE(seq_range) *done;
	const struct leave_on_server_day *d;
	uint32_t lowest_uid, fold_before, day, first_day, latest_folded = 0;
	unsigned int i, before_fold = 0;

	/* near the state's own UIDs and days, where the edges are */
	lowest_uid = fuzz_u32(reader);
	if ((lowest_uid & 0x80000000U) == 0)
		lowest_uid %= 64;
	fold_before = fuzz_u32(reader);
	if ((fold_before & 0x80000000U) == 0 && array_count(&dev->days) > 0) {
		first_day = fuzz_edge_day(dev, FALSE);
		fold_before = first_day + fold_before %
			((uint64_t)fuzz_edge_day(dev, TRUE) - first_day + 2);
	}

	/* what was done by each of the days, and at all */
	fuzz_done(dev, (uint32_t)-1, &before_all);
	t_array_init(&hidden_before, 8);
	array_append_array(&hidden_before, &dev->hidden);
	t_array_init(&done_by_day, 8);
	t_array_init(&days, 8);
	array_foreach(&dev->days, d) {
		done = array_append_space(&done_by_day);
		fuzz_done(dev, d->day, done);
		array_push_back(&days, &d->day);
	}

	leave_on_server_device_compact(dev, lowest_uid, fold_before);

	fuzz_check_days(dev, FALSE);
	if (lowest_uid > 1) {
		seq_range_array_remove_range(&before_all, 1, lowest_uid - 1);
		seq_range_array_remove_range(&hidden_before, 1, lowest_uid - 1);
	}
	fuzz_done(dev, (uint32_t)-1, &after_all);
	if (!fuzz_sets_equal(&before_all, &after_all))
		fuzz_fail("compact(%u, %u) kept %s, expected %s", lowest_uid,
			  fold_before, fuzz_set_str(&after_all),
			  fuzz_set_str(&before_all));
	FUZZ_ASSERT(fuzz_sets_equal(&hidden_before, &dev->hidden));
	/* no new dates; the days before fold_before are folded into the
	   latest of them, the others keep their UIDs: so nothing is done
	   earlier than it was, and nothing expires earlier */
	array_foreach(&dev->days, d)
		FUZZ_ASSERT(fuzz_has_day(&days, d->day));
	for (i = 0; i < array_count(&days); i++) {
		day = *array_idx(&days, i);
		if (day < fold_before)
			latest_folded = day;
	}
	for (i = 0; i < array_count(&days); i++) {
		day = *array_idx(&days, i);
		t_array_init(&want, 8);
		if (day >= latest_folded) {
			array_append_array(&want, array_idx(&done_by_day, i));
			if (lowest_uid > 1)
				seq_range_array_remove_range(&want, 1, lowest_uid - 1);
		}
		fuzz_done(dev, day, &set);
		if (!fuzz_sets_equal(&want, &set))
			fuzz_fail("compact(%u, %u): day %u has %s, expected %s",
				  lowest_uid, fold_before, day,
				  fuzz_set_str(&set), fuzz_set_str(&want));
	}
	array_foreach(&dev->days, d) {
		if (d->day < fold_before)
			before_fold++;
	}
	FUZZ_ASSERT(before_fold <= 1);
	fuzz_check_roundtrip("compacted", dev);
}

static void fuzz_check_merge(struct leave_on_server_device *dest,
			     const struct leave_on_server_device *src)
{
	ARRAY(ARRAY_TYPE(seq_range)) expected;
	ARRAY_TYPE(seq_range) got, hidden, *want;
	const struct leave_on_server_day *d;
	ARRAY_TYPE(uint32_t) days;
	time_t last_seen;
	uint32_t day;
	unsigned int i;
	bool same = dest->uid_validity == src->uid_validity;

	/* the days to look at, and what each should have: the union of
	   both states (a different UIDVALIDITY is another mailbox, whose
	   state is ignored) */
	t_array_init(&days, 8);
	array_foreach(&dest->days, d)
		array_push_back(&days, &d->day);
	array_foreach(&src->days, d)
		array_push_back(&days, &d->day);
	day = (uint32_t)-1;
	array_push_back(&days, &day);
	t_array_init(&expected, 8);
	array_foreach_elem(&days, day) {
		want = array_append_space(&expected);
		fuzz_done(dest, day, want);
		if (same)
			leave_on_server_device_get_done(src, day, want);
	}
	t_array_init(&hidden, 8);
	array_append_array(&hidden, &dest->hidden);
	if (same)
		seq_range_array_merge(&hidden, &src->hidden);
	last_seen = same ? I_MAX(dest->last_seen, src->last_seen) :
		dest->last_seen;

	leave_on_server_device_merge(dest, src);

	fuzz_check_days(dest, TRUE);
	FUZZ_ASSERT(fuzz_sets_equal(&hidden, &dest->hidden));
	FUZZ_ASSERT(dest->last_seen == last_seen);
	for (i = 0; i < array_count(&days); i++) {
		day = *array_idx(&days, i);
		want = array_idx_modifiable(&expected, i);
		fuzz_done(dest, day, &got);
		if (!fuzz_sets_equal(want, &got))
			fuzz_fail("merge: day %u has %s, expected %s", day,
				  fuzz_set_str(&got), fuzz_set_str(want));
	}
	fuzz_check_roundtrip("merged", dest);
}

static void fuzz_pop3_state(const uint8_t *data, size_t size)
{
	struct leave_on_server_device *dev, *other;
	struct fuzz_reader reader;
	const uint8_t *rest, *params;
	const char *value, *value2;
	size_t rest_size, params_size;
	pool_t pool;

	value = fuzz_split_nul(data, size, &rest, &rest_size);
	value2 = fuzz_split_nul(rest, rest_size, &params, &params_size);
	fuzz_reader_init(&reader, params, params_size);

	pool = pool_allocfree_create("fuzz state");
	dev = fuzz_parse(pool, value);
	other = rest_size == 0 ? NULL : fuzz_parse(pool, value2);
	if (dev != NULL) {
		fuzz_check_roundtrip("parsed", dev);
		if (other != NULL) {
			if ((fuzz_u8(&reader) & 1) != 0)
				other->uid_validity = dev->uid_validity;
			fuzz_check_merge(dev, other);
		}
		fuzz_check_compact(dev, &reader);
	}
	pool_unref(&pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	T_BEGIN {
		fuzz_pop3_state(data, size);
	} T_END;
	return 0;
}
