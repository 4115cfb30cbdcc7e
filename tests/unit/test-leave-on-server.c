/* Unit tests of leave_on_server's device state: its text form, and the
   set arithmetic that expiry relies on. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "imap-util.h"
#include "test-common.h"
#include "../../plugins/leave_on_server/leave-on-server-settings.h"
#include "../../plugins/leave_on_server/leave-on-server-state.h"

static const char *set_str(const ARRAY_TYPE(seq_range) *set)
{
	string_t *str = t_str_new(64);

	imap_write_seq_range(str, set);
	return str_c(str);
}

static struct leave_on_server_device *parse_ok(const char *value)
{
	struct leave_on_server_device *dev = NULL;
	const char *error;

	if (leave_on_server_device_parse(pool_datastack_create(), "phone",
					 value, &dev, &error) < 0) {
		i_error("unexpected parse error: %s", error);
		return NULL;
	}
	return dev;
}

static void test_state_roundtrip(void)
{
	static const char *const values[] = {
		"1 1234 1700000000 H=",
		"1 1234 1700000000 H=1:5,7",
		"1 4294967295 1700000000 H=3 D19000=1:10 D19001=11:20,25",
	};
	struct leave_on_server_device *dev;
	unsigned int i;

	test_begin("leave_on_server: state survives format and parse");
	for (i = 0; i < N_ELEMENTS(values); i++) {
		dev = parse_ok(values[i]);
		test_assert_idx(dev != NULL, i);
		if (dev != NULL) {
			test_assert_strcmp_idx(
				leave_on_server_device_format(dev),
				values[i], i);
		}
	}
	test_end();
}

static void test_state_damaged(void)
{
	static const char *const values[] = {
		"", "garbage", "2 1234 1700000000 H=", "1 x 1700000000 H=",
		"1 1234 1700000000", "1 1234 1700000000 X=1",
		"1 1234 1700000000 H=1:*", "1 1234 1700000000 H=a:b",
		"1 1234 1700000000 H= D=1", "1 1234 1700000000 H= Dx=1",
		"1 1234 1700000000 H= D5", "1 1234 1700000000 H= D5=0",
	};
	struct leave_on_server_device *dev;
	const char *error;
	unsigned int i;

	test_begin("leave_on_server: damaged state is refused");
	for (i = 0; i < N_ELEMENTS(values); i++) {
		test_assert_idx(leave_on_server_device_parse(
			pool_datastack_create(), "phone", values[i], &dev,
			&error) < 0, i);
	}
	test_end();
}

static void test_state_days(void)
{
	struct leave_on_server_device *dev;
	ARRAY_TYPE(seq_range) set;

	test_begin("leave_on_server: done UIDs by day");
	dev = parse_ok("1 1 0 H= D100=1:3 D105=4:6 D110=7");
	t_array_init(&set, 4);
	leave_on_server_device_get_done(dev, 99, &set);
	test_assert_strcmp(set_str(&set), "");
	leave_on_server_device_get_done(dev, 105, &set);
	test_assert_strcmp(set_str(&set), "1:6");
	array_clear(&set);
	leave_on_server_device_get_done(dev, (uint32_t)-1, &set);
	test_assert_strcmp(set_str(&set), "1:7");

	/* a UID done again later keeps its first day */
	array_clear(&set);
	seq_range_array_add_range(&set, 2, 8);
	leave_on_server_device_add_done(dev, 111, &set);
	array_clear(&set);
	leave_on_server_device_get_done(dev, 105, &set);
	test_assert_strcmp(set_str(&set), "1:6");
	test_end();
}

static void test_state_compact(void)
{
	struct leave_on_server_device *dev;
	ARRAY_TYPE(seq_range) set;

	test_begin("leave_on_server: compacting never makes mail expire earlier");
	dev = parse_ok("1 1 0 H=1:10 D100=1:3 D105=4:6 D110=7 D120=8");
	leave_on_server_device_compact(dev, 3, 115);
	/* UIDs below 3 are gone; days before 115 are folded into the
	   latest of them, 110 */
	test_assert_strcmp(leave_on_server_device_format(dev),
			   "1 1 0 H=3:10 D110=3:7 D120=8");
	t_array_init(&set, 4);
	leave_on_server_device_get_done(dev, 109, &set);
	test_assert_strcmp(set_str(&set), "");

	/* a day left empty by the trim disappears */
	leave_on_server_device_compact(dev, 8, 0);
	test_assert_strcmp(leave_on_server_device_format(dev),
			   "1 1 0 H=8:10 D120=8");
	test_end();
}

static void test_state_merge(void)
{
	struct leave_on_server_device *a, *b, *c;

	test_begin("leave_on_server: merging two sessions' state");
	a = parse_ok("1 7 100 H=1 D10=1:2");
	b = parse_ok("1 7 200 H=5 D10=3 D11=4");
	leave_on_server_device_merge(a, b);
	test_assert_strcmp(leave_on_server_device_format(a),
			   "1 7 200 H=1,5 D10=1:3 D11=4");
	/* another UIDVALIDITY is another mailbox: nothing to merge */
	c = parse_ok("1 8 300 H=9 D12=9");
	leave_on_server_device_merge(a, c);
	test_assert_strcmp(leave_on_server_device_format(a),
			   "1 7 200 H=1,5 D10=1:3 D11=4");
	test_end();
}

static const char *repeat_a(unsigned int n)
{
	string_t *str = t_str_new(n + 1);

	while (n-- > 0)
		str_append_c(str, 'a');
	return str_c(str);
}

static void test_device_names(void)
{
	test_begin("leave_on_server: device names");
	test_assert(leave_on_server_device_name_valid("phone"));
	test_assert(leave_on_server_device_name_valid("alice.phone-2+x@y_z"));
	test_assert(!leave_on_server_device_name_valid(""));
	test_assert(!leave_on_server_device_name_valid("bad/name"));
	test_assert(!leave_on_server_device_name_valid("two words"));
	test_assert(!leave_on_server_device_name_valid(repeat_a(65)));
	test_assert(leave_on_server_device_name_valid(repeat_a(64)));
	test_end();
}

int main(void)
{
	static void (*const test_functions[])(void) = {
		test_state_roundtrip,
		test_state_damaged,
		test_state_days,
		test_state_compact,
		test_state_merge,
		test_device_names,
		NULL
	};
	return test_run(test_functions);
}
