/* Unit tests of the rules parser and matcher, on Dovecot's lib-test. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "test-common.h"
#include "../../plugins/access_rules/access-rules-private.h"

#include <time.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

static struct access_rules *
parse_ok(const char *text)
{
	struct access_rules *rules = NULL;
	ARRAY_TYPE(const_string) errors;
	const char *error;

	t_array_init(&errors, 4);
	if (access_rules_parse("rules.conf", text, &rules, &errors) < 0) {
		array_foreach_elem(&errors, error)
			i_error("unexpected parse error: %s", error);
		return NULL;
	}
	return rules;
}

/* Returns the first error, or NULL if the text parsed. */
static const char *parse_error(const char *text)
{
	struct access_rules *rules = NULL;
	ARRAY_TYPE(const_string) errors;

	t_array_init(&errors, 4);
	if (access_rules_parse("rules.conf", text, &rules, &errors) == 0) {
		access_rules_free(&rules);
		return NULL;
	}
	test_assert(array_count(&errors) > 0);
	return array_idx_elem(&errors, 0);
}

static void session_init(struct access_rules_session *session,
			 const char *protocol, const char *user, const char *ip)
{
	i_zero(session);
	test_assert(access_rule_protocol_parse(protocol, &session->protocol) == 0);
	session->username = user;
	if (ip != NULL)
		test_assert(net_addr2ip(ip, &session->remote_ip) == 0);
	session->local_port = 143;
	/* a Wednesday, 10:30 local time */
	struct tm tm;
	i_zero(&tm);
	tm.tm_year = 2026 - 1900;
	tm.tm_mon = 10;
	tm.tm_mday = 18;
	tm.tm_hour = 10;
	tm.tm_min = 30;
	tm.tm_isdst = -1;
	session->now = mktime(&tm);
}

/* Returns the decision's rule line (0 = default) and action. */
static unsigned int
decide(struct access_rules *rules, const struct access_rules_session *session,
       enum access_rule_action *action_r)
{
	struct access_rules_decision decision;
	const char *error;

	i_zero(&decision);
	test_assert(access_rules_evaluate(rules, ACCESS_RULES_DEFAULT_SET,
					  session, &decision, &error) == 0);
	*action_r = decision.action;
	return decision.rule_line;
}

static void test_parse_errors(void)
{
	static const struct {
		const char *text;
		const char *error;
	} tests[] = {
		{ "allow protocol imap4\n",
		  "rules.conf:1: unknown protocol \"imap4\" (expected imap or pop3)" },
		{ "# ok\n\npermit user x\n",
		  "rules.conf:3: unknown action \"permit\" (expected allow, deny, readonly, default or ruleset)" },
		{ "deny from 10.1.2.3/8\n",
		  "rules.conf:1: network \"10.1.2.3/8\" has host bits set (did you mean 10.0.0.0/8?)" },
		{ "deny from 10.0.0.0/33\n",
		  "rules.conf:1: invalid network \"10.0.0.0/33\" (expected an IPv4 or IPv6 address, optionally with /bits)" },
		{ "deny from nonsense\n",
		  "rules.conf:1: invalid network \"nonsense\" (expected an IPv4 or IPv6 address, optionally with /bits)" },
		{ "deny reason \"unterminated\n",
		  "rules.conf:1: missing closing quote" },
		{ "deny port 0\n",
		  "rules.conf:1: invalid port \"0\" (expected 1-65535 or a range such as 993-995)" },
		{ "deny port 995-993\n",
		  "rules.conf:1: invalid port \"995-993\" (expected 1-65535 or a range such as 993-995)" },
		{ "deny time 25:00-26:00\n",
		  "rules.conf:1: invalid time window \"25:00-26:00\" (expected HH:MM-HH:MM)" },
		{ "deny time 10:00-10:00\n",
		  "rules.conf:1: time window \"10:00-10:00\" is empty" },
		{ "deny days funday\n",
		  "rules.conf:1: invalid day \"funday\" (expected mon..sun or a range such as mon-fri)" },
		{ "deny tls maybe\n",
		  "rules.conf:1: invalid tls value \"maybe\" (expected yes or no)" },
		{ "allow user a user b\n",
		  "rules.conf:1: \"user\" given twice in one rule" },
		{ "allow user\n",
		  "rules.conf:1: \"user\" needs a value" },
		{ "allow user a,\n",
		  "rules.conf:1: \"user\" needs a value" },
		{ "allow sessions 0\n",
		  "rules.conf:1: invalid \"sessions\" value \"0\" (expected a number of sessions, 1 or more)" },
		{ "allow sessions -1\n",
		  "rules.conf:1: invalid \"sessions\" value \"-1\" (expected a number of sessions, 1 or more)" },
		{ "deny mailboxes INBOX\n",
		  "rules.conf:1: \"deny\" takes no \"mailboxes\" or sessions options" },
		{ "allow reason \"why\"\n",
		  "rules.conf:1: \"reason\" is only shown for deny and readonly rules" },
		{ "allow colour blue\n",
		  "rules.conf:1: unknown keyword \"colour\"" },
		{ "allow protocol !imap,!pop3\n",
		  "rules.conf:1: \"protocol\" excludes every protocol" },
		{ "allow tls !yes\n",
		  "rules.conf:1: \"tls\" can't be negated: \"!yes\"" },
		{ "ruleset a\nruleset a\n",
		  "rules.conf:2: rule set \"a\" is defined twice" },
		{ "ruleset\n",
		  "rules.conf:1: \"ruleset\" takes exactly one name" },
		{ "default deny\ndefault allow\n",
		  "rules.conf:2: rule set \"default\" already has a default (line 1)" },
		{ "default maybe\n",
		  "rules.conf:1: \"default\" must be followed by allow, deny or readonly, found \"maybe\"" },
		{ "allow \\\n  user x \\\n  colour red\n",
		  "rules.conf:1: unknown keyword \"colour\"" },
		{ "allow user a\n\"deny\"\n",
		  "rules.conf:2: a line must start with allow, deny, readonly, default or ruleset, found \"deny\"" },
	};
	unsigned int i;

	test_begin("access rules: parse errors name file:line");
	for (i = 0; i < N_ELEMENTS(tests); i++) {
		const char *error = parse_error(tests[i].text);

		test_assert_strcmp_idx(error, tests[i].error, i);
	}
	test_end();
}

static void test_parse_many_errors(void)
{
	struct access_rules *rules = NULL;
	ARRAY_TYPE(const_string) errors;

	test_begin("access rules: every bad line is reported");
	t_array_init(&errors, 4);
	test_assert(access_rules_parse("r", "allow x\nallow user a\ndeny y\n",
				       &rules, &errors) < 0);
	test_assert(rules == NULL);
	test_assert(array_count(&errors) == 2);
	test_assert_strcmp(array_idx_elem(&errors, 0),
			   "r:1: unknown keyword \"x\"");
	test_assert_strcmp(array_idx_elem(&errors, 1),
			   "r:3: unknown keyword \"y\"");
	test_end();
}

static void test_parse_ok(void)
{
	struct access_rules *rules;

	test_begin("access rules: valid syntax");
	rules = parse_ok(
		"# comment\n"
		"   \n"
		"default deny reason \"nope\"   # trailing comment\n"
		"allow protocol imap,pop3 user \"a b\",c domain example.com \\\n"
		"   group staff from 10.0.0.0/8, !10.1.0.0/16, ::1, fe80::/10 \\\n"
		"   port 143,993-995 tls yes client-name Thunder* \\\n"
		"   client-version 1.* time 22:00-06:00 days fri-mon,wed\n"
		"readonly reason \"read \\\"only\\\"\" mailboxes INBOX,\"Sent Items\" sessions 3 imap-sessions 2 pop3-sessions 1\r\n"
		"ruleset strict\n"
		"deny\n");
	test_assert(rules != NULL);
	if (rules != NULL) {
		test_assert(access_rules_count(rules) == 3);
		test_assert(access_rules_set_count(rules) == 2);
		test_assert(access_rules_has_set(rules, "strict"));
		test_assert(!access_rules_has_set(rules, "lax"));
		test_assert(access_rules_set_has_session_caps(rules, "default"));
		test_assert(!access_rules_set_has_session_caps(rules, "strict"));
		access_rules_free(&rules);
	}
	test_assert(rules == NULL);
	test_end();
}

static void test_match_kinds(void)
{
	struct access_rules *rules;
	struct access_rules_session s;
	enum access_rule_action action;
	const char *groups[] = { "staff", "finance", NULL };

	test_begin("access rules: each match kind");
	rules = parse_ok(
		"deny protocol pop3 from !192.0.2.0/24\n"             /* 1 */
		"deny user mallory@*\n"                               /* 2 */
		"readonly domain partner.example\n"                   /* 3 */
		"deny group finance tls no\n"                         /* 4 */
		"deny from 2001:db8::/32\n"                           /* 5 */
		"deny port 110\n"                                     /* 6 */
		"deny client-name \"Evil*\" client-version !2.*\n"    /* 7 */
		"deny days sat,sun\n"                                 /* 8 */
		"deny time 10:00-11:00 user night@example.com\n"      /* 9 */
		"allow user carol@example.com sessions 2\n");         /* 10 */
	test_assert(rules != NULL);
	if (rules == NULL) {
		test_end();
		return;
	}

	session_init(&s, "pop3", "alice@example.com", "198.51.100.7");
	test_assert(decide(rules, &s, &action) == 1 &&
		    action == ACCESS_RULE_ACTION_DENY);
	session_init(&s, "pop3", "alice@example.com", "192.0.2.9");
	test_assert(decide(rules, &s, &action) == 0 &&
		    action == ACCESS_RULE_ACTION_ALLOW);
	/* an unknown address never matches, even a negated network */
	session_init(&s, "pop3", "alice@example.com", NULL);
	test_assert(decide(rules, &s, &action) == 0);

	session_init(&s, "imap", "MALLORY@example.com", "192.0.2.9");
	test_assert(decide(rules, &s, &action) == 2);

	session_init(&s, "imap", "bob@partner.example", "192.0.2.9");
	test_assert(decide(rules, &s, &action) == 3 &&
		    action == ACCESS_RULE_ACTION_READONLY);

	session_init(&s, "imap", "fin@example.com", "192.0.2.9");
	s.groups = groups;
	test_assert(decide(rules, &s, &action) == 4);
	s.tls = TRUE;
	test_assert(decide(rules, &s, &action) == 0);

	session_init(&s, "imap", "alice@example.com", "2001:db8::1");
	test_assert(decide(rules, &s, &action) == 5);
	session_init(&s, "imap", "alice@example.com", "2001:db9::1");
	test_assert(decide(rules, &s, &action) == 0);

	session_init(&s, "imap", "alice@example.com", "192.0.2.9");
	s.local_port = 110;
	test_assert(decide(rules, &s, &action) == 6);

	session_init(&s, "imap", "alice@example.com", "192.0.2.9");
	s.client_name = "EvilClient";
	s.client_version = "1.0";
	test_assert(decide(rules, &s, &action) == 7);
	s.client_version = "2.5";
	test_assert(decide(rules, &s, &action) == 0);
	/* no ID sent: the client-name condition can't match */
	s.client_name = NULL;
	s.client_version = NULL;
	test_assert(decide(rules, &s, &action) == 0);

	session_init(&s, "imap", "alice@example.com", "192.0.2.9");
	s.now += 3 * 24 * 3600; /* Saturday */
	test_assert(decide(rules, &s, &action) == 8);

	session_init(&s, "imap", "night@example.com", "192.0.2.9");
	test_assert(decide(rules, &s, &action) == 9);
	s.now += 3600;
	test_assert(decide(rules, &s, &action) == 0);

	session_init(&s, "imap", "carol@example.com", "192.0.2.9");
	struct access_rules_decision decision;
	const char *error;
	test_assert(access_rules_evaluate(rules, "default", &s, &decision, &error) == 0);
	test_assert(decision.rule_line == 10 && decision.max_sessions == 2);
	test_assert(access_rules_evaluate(rules, "missing", &s, &decision, &error) == -1);
	access_rules_free(&rules);
	test_end();
}

static void test_unknown_values(void)
{
	struct access_rules *rules;
	struct access_rules_session s;
	enum access_rule_action action;
	const char *staff[] = { "staff", NULL };

	test_begin("access rules: unknown values never match, no groups is known");
	rules = parse_ok("deny from !10.0.0.0/8\n"          /* 1 */
			 "deny client-name !Good*\n"       /* 2 */
			 "deny domain !example.com\n"      /* 3 */
			 "readonly group !staff\n");       /* 4 */
	test_assert(rules != NULL);
	if (rules == NULL) {
		test_end();
		return;
	}
	/* no address, no ID, no domain: none of 1-3 can hold */
	session_init(&s, "imap", "localuser", NULL);
	s.groups = staff;
	test_assert(decide(rules, &s, &action) == 0);
	/* no groups at all: "not staff" holds */
	s.groups = NULL;
	test_assert(decide(rules, &s, &action) == 4);
	access_rules_free(&rules);
	test_end();
}

static void test_first_match_wins(void)
{
	struct access_rules *rules;
	struct access_rules_session s;
	enum access_rule_action action;
	struct access_rules_decision decision;
	const char *error;

	test_begin("access rules: first match wins across index buckets");
	/* each rule lands in a different index bucket; the order of the
	   file must still decide */
	rules = parse_ok(
		"readonly from 10.0.0.0/8\n"             /* 1: trie */
		"deny user alice@example.com\n"          /* 2: users */
		"deny domain example.com\n"              /* 3: domains */
		"allow from 10.1.0.0/16\n"               /* 4: trie, deeper */
		"deny tls no\n"                          /* 5: generic */
		"default deny reason \"default\"\n"
		"ruleset other\n"
		"allow user alice@example.com\n");
	test_assert(rules != NULL);
	if (rules == NULL) {
		test_end();
		return;
	}
	session_init(&s, "imap", "alice@example.com", "10.1.2.3");
	test_assert(decide(rules, &s, &action) == 1);
	session_init(&s, "imap", "alice@example.com", "192.0.2.1");
	test_assert(decide(rules, &s, &action) == 2);
	session_init(&s, "imap", "bob@example.com", "192.0.2.1");
	test_assert(decide(rules, &s, &action) == 3);
	session_init(&s, "imap", "bob@example.org", "192.0.2.1");
	test_assert(decide(rules, &s, &action) == 5);
	s.tls = TRUE;
	test_assert(access_rules_evaluate(rules, "default", &s, &decision, &error) == 0);
	test_assert(decision.rule_line == 0 && decision.default_line == 6 &&
		    decision.action == ACCESS_RULE_ACTION_DENY);
	test_assert_strcmp(decision.reason, "default");
	test_assert(access_rules_evaluate(rules, "other", &s, &decision, &error) == 0);
	test_assert(decision.rule_line == 0 && decision.default_line == 0 &&
		    decision.action == ACCESS_RULE_ACTION_ALLOW);
	access_rules_free(&rules);
	test_end();
}

/* The index must give the same answer as testing every rule in order. */
static void test_index_equals_scan(void)
{
	static const char *users[] = {
		"u1@a.example", "u2@a.example", "u3@b.example", "x@c.example"
	};
	static const char *ips[] = {
		"10.0.0.1", "10.1.2.3", "10.1.2.200", "192.0.2.1", "::1",
		"2001:db8::5", "2001:db8:1::5"
	};
	static const char *lines[] = {
		"deny user u1@a.example from 10.1.0.0/16",
		"readonly from 10.1.2.128/25",
		"deny domain b.example tls no",
		"allow user u2@a.example,u3@b.example port 993",
		"deny from 2001:db8::/32, !2001:db8:1::/48",
		"readonly group g1",
		"deny user *@a.example protocol pop3",
		"allow from 10.0.0.0/8",
		"deny domain a.example",
		"readonly from ::1",
	};
	const char *groups[] = { "g1", NULL };
	struct access_rules *rules;
	struct access_rules_session s;
	string_t *text;
	unsigned int i, u, ip, proto, tls, port, g, mask;
	bool ok = TRUE;

	test_begin("access rules: indexed lookup equals a linear scan");
	/* every subset of the rule lines, in order */
	for (mask = 1; mask < (1U << N_ELEMENTS(lines)) && ok; mask += 7) {
		enum access_rule_action action;
		unsigned int line, expected;

		text = t_str_new(512);
		for (i = 0; i < N_ELEMENTS(lines); i++) {
			str_append(text, (mask & (1U << i)) != 0 ?
				   lines[i] : "# off");
			str_append_c(text, '\n');
		}
		rules = parse_ok(str_c(text));
		if (rules == NULL) {
			ok = FALSE;
			break;
		}
		for (u = 0; u < N_ELEMENTS(users); u++)
		for (ip = 0; ip < N_ELEMENTS(ips); ip++)
		for (proto = 0; proto < 2; proto++)
		for (tls = 0; tls < 2; tls++)
		for (port = 0; port < 2; port++)
		for (g = 0; g < 2; g++) {
			session_init(&s, proto == 0 ? "imap" : "pop3",
				     users[u], ips[ip]);
			s.tls = tls == 1;
			s.local_port = port == 0 ? 143 : 993;
			s.groups = g == 0 ? NULL : groups;
			line = decide(rules, &s, &action);

			/* the reference: every rule tested in file order */
			const struct access_rule_set *set =
				access_rules_find_set(rules, "default");
			struct access_rule *rule;
			expected = 0;
			array_foreach_elem(&set->rules, rule) {
				if (access_rule_match(rule, &s)) {
					expected = rule->line;
					break;
				}
			}
			if (line != expected) {
				i_error("mask %x user %s ip %s: got %u, want %u",
					mask, users[u], ips[ip], line, expected);
				ok = FALSE;
			}
		}
		access_rules_free(&rules);
	}
	test_assert(ok);
	test_end();
}

static const char *compiled_test_rules =
	"deny user u1@a.example from 10.1.0.0/16 reason \"one\"\n"
	"readonly from 10.1.2.128/25, 2001:db8::/32\n"
	"deny domain b.example tls no\n"
	"allow user u2@a.example,u3@b.example port 993 mailboxes INBOX,!Shared*\n"
	"readonly group g1 sessions 2\n"
	"deny user *@a.example protocol pop3\n"
	"allow from 10.0.0.0/8\n"
	"deny client-name Evil*\n"
	"default deny reason \"nothing matched\"\n"
	"ruleset other\n"
	"allow user u1@a.example imap-sessions 1\n";

static const char *write_temp_rules(const char *text)
{
	const char *path = t_strdup_printf("/tmp/test-access-rules.%s.conf",
					   dec2str(getpid()));
	FILE *f = fopen(path, "w");

	i_assert(f != NULL);
	fputs(text, f);
	i_assert(fclose(f) == 0);
	return path;
}

static bool decisions_equal(const struct access_rules_decision *d1,
			    const struct access_rules_decision *d2)
{
	return d1->action == d2->action && d1->rule_line == d2->rule_line &&
		d1->default_line == d2->default_line &&
		null_strcmp(d1->reason, d2->reason) == 0 &&
		d1->max_sessions == d2->max_sessions &&
		d1->max_protocol_sessions[1] == d2->max_protocol_sessions[1] &&
		d1->depends_on_client_id == d2->depends_on_client_id &&
		(d1->mailboxes == NULL) == (d2->mailboxes == NULL) &&
		(d1->hidden_mailboxes == NULL) == (d2->hidden_mailboxes == NULL);
}

static void test_compiled_equals_text(void)
{
	static const char *users[] = {
		"u1@a.example", "U2@a.example", "u3@b.example", "x@c.example"
	};
	static const char *ips[] = {
		"10.1.2.3", "10.1.2.200", "192.0.2.1", "2001:db8::5", "::1"
	};
	static const char *sets[] = { "default", "other" };
	const char *groups[] = { "g1", NULL };
	struct access_rules *text_rules, *compiled_rules;
	ARRAY_TYPE(const_string) errors;
	struct access_rules_session s;
	struct access_rules_decision d1, d2;
	const char *path, *error;
	unsigned int u, ip, proto, tls, g, set, checked = 0;
	bool ok = TRUE;

	test_begin("access rules: compiled file gives the text's answers");
	path = write_temp_rules(compiled_test_rules);
	t_array_init(&errors, 4);
	test_assert(access_rules_load(path, ACCESS_RULES_LOAD_FLAG_TEXT,
				      &text_rules, &errors) == 0);
	test_assert(!access_rules_is_compiled(text_rules));
	test_assert(access_rules_compile(text_rules, &error) == 0);
	test_assert(access_rules_load(path, 0, &compiled_rules, &errors) == 0);
	test_assert(access_rules_is_compiled(compiled_rules));
	test_assert(access_rules_count(compiled_rules) == 9);
	test_assert(access_rules_set_count(compiled_rules) == 2);
	test_assert(access_rules_set_has_session_caps(compiled_rules, "other"));
	test_assert(!access_rules_has_set(compiled_rules, "missing"));

	for (set = 0; set < N_ELEMENTS(sets); set++)
	for (u = 0; u < N_ELEMENTS(users); u++)
	for (ip = 0; ip < N_ELEMENTS(ips); ip++)
	for (proto = 0; proto < 2; proto++)
	for (tls = 0; tls < 2; tls++)
	for (g = 0; g < 2; g++) {
		session_init(&s, proto == 0 ? "imap" : "pop3", users[u], ips[ip]);
		s.tls = tls == 1;
		s.local_port = tls == 1 ? 993 : 143;
		s.groups = g == 0 ? NULL : groups;
		s.client_name = g == 0 ? NULL : "EvilClient";
		if (access_rules_evaluate(text_rules, sets[set], &s, &d1,
					  &error) < 0 ||
		    access_rules_evaluate(compiled_rules, sets[set], &s, &d2,
					  &error) < 0 ||
		    !decisions_equal(&d1, &d2)) {
			i_error("set %s user %s ip %s: text line %u, "
				"compiled line %u", sets[set], users[u],
				ips[ip], d1.rule_line, d2.rule_line);
			ok = FALSE;
		}
		checked++;
	}
	test_assert(ok && checked == 320);
	access_rules_free(&compiled_rules);

	/* an edit after compiling makes the compiled file stale */
	sleep(0);
	FILE *f = fopen(path, "a");
	fputs("# edited\n", f);
	fclose(f);
	test_assert(access_rules_load(path, 0, &compiled_rules, &errors) == 0);
	test_assert(!access_rules_is_compiled(compiled_rules));
	test_assert(access_rules_get_warning(compiled_rules) == NULL);
	access_rules_free(&compiled_rules);
	access_rules_free(&text_rules);
	i_unlink(t_strconcat(path, ".compiled", NULL));
	i_unlink(path);
	test_end();
}

/* A damaged compiled file is reported and ignored: never followed, never
   a crash, never a wrong answer. */
static void test_compiled_damaged(void)
{
	struct access_rules *text_rules, *rules;
	ARRAY_TYPE(const_string) errors;
	struct access_rules_session s;
	struct access_rules_decision d1, d2;
	const char *path, *cpath, *error;
	unsigned char *data;
	size_t size;
	unsigned int i, round, detected = 0, index_damage = 0;
	struct stat st;
	int fd;

	test_begin("access rules: damaged compiled file");
	path = write_temp_rules(compiled_test_rules);
	cpath = t_strconcat(path, ".compiled", NULL);
	t_array_init(&errors, 4);
	test_assert(access_rules_load(path, ACCESS_RULES_LOAD_FLAG_TEXT,
				      &text_rules, &errors) == 0);
	test_assert(access_rules_compile(text_rules, &error) == 0);
	test_assert(stat(cpath, &st) == 0);
	size = st.st_size;
	data = i_malloc(size);
	fd = open(cpath, O_RDONLY);
	test_assert(read(fd, data, size) == (ssize_t)size);
	i_close_fd(&fd);

	for (round = 0; round < 400; round++) {
		/* truncate, flip bytes anywhere, or flip a byte in a rule's
		   text; the header's identity stays, so the file still
		   looks fresh */
		unsigned char *copy = i_malloc(size);
		size_t new_size = size;
		enum { TRUNCATE, FLIP_ANY, FLIP_TEXT } kind = round % 3;

		memcpy(copy, data, size);
		if (kind == TRUNCATE)
			new_size = 64 + i_rand_limit(size - 64);
		else if (kind == FLIP_ANY) {
			for (i = 0; i < 1 + i_rand_limit(4); i++)
				copy[72 + i_rand_limit(size - 72)] ^= 1 + i_rand_limit(255);
		} else {
			/* the rule texts: "deny user u1@a.example ..." */
			unsigned char *text = NULL;
			size_t pos;

			for (pos = 0; pos + 13 <= size && text == NULL; pos++) {
				if (memcmp(copy + pos, "deny user u1@", 13) == 0)
					text = copy + pos;
			}
			i_assert(text != NULL);
			text[5 + i_rand_limit(20)] ^= 0x01;
		}
		fd = open(cpath, O_WRONLY | O_TRUNC);
		test_assert(write(fd, copy, new_size) == (ssize_t)new_size);
		i_close_fd(&fd);
		i_free(copy);

		array_clear(&errors);
		test_assert(access_rules_load(path, 0, &rules, &errors) == 0);
		if (kind == TRUNCATE)
			test_assert(!access_rules_is_compiled(rules));
		session_init(&s, round % 2 == 0 ? "imap" : "pop3",
			     "u1@a.example",
			     round % 4 == 0 ? "10.1.2.200" : "192.0.2.1");
		test_assert(access_rules_evaluate(text_rules, "default", &s,
						  &d1, &error) == 0);
		if (access_rules_evaluate(rules, "default", &s, &d2,
					  &error) == 0) {
			if (!decisions_equal(&d1, &d2)) {
				if (kind == FLIP_TEXT)
					test_assert(FALSE);
				else
					index_damage++;
			}
		} else {
			test_assert(access_rules_is_compiled(rules));
			detected++;
		}
		access_rules_free(&rules);
	}
	/* flips in the index itself (key order, list entries) are not
	   detected: that would need a checksum of the whole file at every
	   login. Say how often they changed an answer. */
	i_info("damaged compiled files: %u detected, %u flips in the index "
	       "changed an answer", detected, index_damage);
	test_assert(detected > 0);
	access_rules_free(&text_rules);
	i_free(data);
	i_unlink(cpath);
	i_unlink(path);
	test_end();
}

int main(void)
{
	static void (*const test_functions[])(void) = {
		test_parse_errors,
		test_parse_many_errors,
		test_parse_ok,
		test_match_kinds,
		test_unknown_values,
		test_first_match_wins,
		test_index_equals_scan,
		test_compiled_equals_text,
		test_compiled_damaged,
		NULL
	};
	return test_run(test_functions);
}
