/* What the fuzz targets found, as unit tests on Dovecot's lib-test: each
   test is the smallest case of one finding. The inputs that found them
   are beside this file, replayed by `make fuzz-regress`. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "net.h"
#include "test-common.h"
#include "../../../plugins/access_rules/access-rules-private.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

/* FILE.compiled's header: after the magic (8), version and byte order
   (4 + 4), source device, inode, size and mtime (5 * 8) come the file
   size, rule count, set count and sets_offset */
#define COMPILED_FILE_SIZE_POS 56
#define COMPILED_SETS_OFFSET_POS 68

static const char *write_temp_rules(const char *text)
{
	const char *path = t_strdup_printf("/tmp/test-fuzz-regressions.%s.conf",
					   dec2str(getpid()));
	FILE *f = fopen(path, "w");

	i_assert(f != NULL);
	fputs(text, f);
	i_assert(fclose(f) == 0);
	return path;
}

static void remove_temp_rules(const char *path)
{
	i_unlink_if_exists(t_strconcat(path, ".compiled", NULL));
	i_unlink(path);
}

/* Returns the decision's rule line, or -1 if the evaluation failed. */
static int decide_line(const struct access_rules *rules,
		       const struct access_rules_session *session)
{
	struct access_rules_decision decision;
	const char *error;

	if (access_rules_evaluate(rules, ACCESS_RULES_DEFAULT_SET, session,
				  &decision, &error) < 0)
		return -1;
	return (int)decision.rule_line;
}

/* fuzz-access-rules, regressions/access-rules/
   ipv4-mapped-session-skips-ipv4-rule: access_rule_match() (through
   net_is_in_network()) matches an IPv4-mapped IPv6 address against an
   IPv4 network, but the index looked such an address up only among the
   IPv6 networks, so the rule was never tried. */
static void test_access_rules_ipv4_mapped(void)
{
	static const char *text =
		"deny from 203.0.113.0/24 reason \"blocked network\"\n";
	struct access_rules *rules, *compiled;
	struct access_rules_session session;
	ARRAY_TYPE(const_string) errors;
	const struct access_rule_set *set;
	const char *path, *error;

	test_begin("fuzz regression: IPv4-mapped address meets an IPv4 rule");
	path = write_temp_rules(text);
	t_array_init(&errors, 4);
	test_assert(access_rules_load(path, ACCESS_RULES_LOAD_FLAG_TEXT,
				      &rules, &errors) == 0);
	i_zero(&session);
	session.protocol = ACCESS_RULE_PROTOCOL_IMAP;
	test_assert(net_addr2ip("::ffff:203.0.113.9", &session.remote_ip) == 0);

	/* the matcher says the rule matches... */
	set = access_rules_find_set(rules, ACCESS_RULES_DEFAULT_SET);
	test_assert(access_rule_match(array_idx_elem(&set->rules, 0), &session));
	/* ...so the first matching rule is line 1, indexed or compiled */
	test_assert(decide_line(rules, &session) == 1);
	test_assert(access_rules_compile(rules, &error) == 0);
	test_assert(access_rules_load(path, 0, &compiled, &errors) == 0);
	test_assert(access_rules_is_compiled(compiled));
	test_assert(decide_line(compiled, &session) == 1);

	access_rules_free(&compiled);
	access_rules_free(&rules);
	remove_temp_rules(path);
	test_end();
}

/* Moves the set records of FILE.compiled to an offset that is 4- but
   not 8-aligned, the rest of the file intact: the records are copied
   to the end of the file, where sets_offset then points. */
static void compiled_misalign_sets(const char *cpath)
{
	buffer_t *buf = t_buffer_create(1024);
	unsigned char data[4096], *records;
	uint32_t file_size, sets_offset, first_name, new_offset;
	ssize_t ret;
	int fd;

	fd = open(cpath, O_RDWR);
	i_assert(fd != -1);
	while ((ret = read(fd, data, sizeof(data))) > 0)
		buffer_append(buf, data, ret);
	i_assert(ret == 0);
	memcpy(&sets_offset, CONST_PTR_OFFSET(buf->data, COMPILED_SETS_OFFSET_POS),
	       sizeof(sets_offset));
	/* the writer puts the first set's name right after the records */
	memcpy(&first_name, CONST_PTR_OFFSET(buf->data, sets_offset),
	       sizeof(first_name));
	i_assert(sets_offset % 8 == 0 && first_name > sets_offset);

	/* copied aside first: appending may move the buffer */
	records = t_malloc_no0(first_name - sets_offset);
	memcpy(records, CONST_PTR_OFFSET(buf->data, sets_offset),
	       first_name - sets_offset);
	new_offset = (buf->used + 7) / 8 * 8 + 4;
	buffer_append_zero(buf, new_offset - buf->used);
	buffer_append(buf, records, first_name - sets_offset);
	file_size = buf->used;
	buffer_write(buf, COMPILED_FILE_SIZE_POS, &file_size, sizeof(file_size));
	buffer_write(buf, COMPILED_SETS_OFFSET_POS, &new_offset,
		     sizeof(new_offset));
	i_assert(pwrite(fd, buf->data, buf->used, 0) == (ssize_t)buf->used);
	i_close_fd(&fd);
}

/* fuzz-access-rules, regressions/access-rules/
   compiled-sets-offset-misaligned: offsets in FILE.compiled are checked
   to be 4-aligned, but the set records hold 64-bit fields; a damaged
   sets_offset that is 4- but not 8-aligned was followed (a misaligned
   read: UBSan reports it, strict-alignment CPUs trap). Damage must be
   reported: the file is not used, or evaluating with it fails. */
static void test_access_rules_compiled_misaligned_sets(void)
{
	struct access_rules *rules, *compiled;
	struct access_rules_session session;
	ARRAY_TYPE(const_string) errors;
	const char *path, *error;

	test_begin("fuzz regression: compiled file with misaligned sets");
	path = write_temp_rules("allow user alice\n");
	t_array_init(&errors, 4);
	test_assert(access_rules_load(path, ACCESS_RULES_LOAD_FLAG_TEXT,
				      &rules, &errors) == 0);
	test_assert(access_rules_compile(rules, &error) == 0);
	compiled_misalign_sets(t_strconcat(path, ".compiled", NULL));

	test_assert(access_rules_load(path, 0, &compiled, &errors) == 0);
	i_zero(&session);
	session.username = "alice";
	test_assert(!access_rules_is_compiled(compiled) ||
		    decide_line(compiled, &session) < 0);

	access_rules_free(&compiled);
	access_rules_free(&rules);
	remove_temp_rules(path);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_access_rules_ipv4_mapped,
		test_access_rules_compiled_misaligned_sets,
		NULL
	};
	return test_run(tests);
}
