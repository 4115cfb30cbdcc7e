/* access-rules: checks a rules file, or shows what it decides for a
   given client, with the same parser and matcher as the plugin. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "access-rules.h"

#include <getopt.h>
#include <stdio.h>
#include <time.h>
#include <sys/stat.h>

#define ACCESS_RULES_TOOL_USAGE \
"usage: access-rules check FILE\n" \
"       access-rules compile FILE\n" \
"       access-rules test FILE --user USER --protocol imap|pop3 --ip IP\n" \
"                    [--tls] [--port PORT] [--groups G1,G2]\n" \
"                    [--client-id NAME] [--client-version VERSION]\n" \
"                    [--ruleset NAME] [--time 'YYYY-MM-DD HH:MM']\n"

enum access_rules_tool_exit {
	ACCESS_RULES_TOOL_EXIT_OK = 0,
	ACCESS_RULES_TOOL_EXIT_INVALID = 1,
	ACCESS_RULES_TOOL_EXIT_USAGE = 2,
};

static int ATTR_FORMAT(1, 2) access_rules_tool_usage(const char *fmt, ...)
{
	va_list args;

	if (fmt != NULL) {
		va_start(args, fmt);
		fprintf(stderr, "access-rules: %s\n", t_strdup_vprintf(fmt, args));
		va_end(args);
	}
	fputs(ACCESS_RULES_TOOL_USAGE, stderr);
	return ACCESS_RULES_TOOL_EXIT_USAGE;
}

/* Returns the rules, or NULL after printing every error. */
static struct access_rules *
access_rules_tool_load(const char *path, enum access_rules_load_flags flags)
{
	ARRAY_TYPE(const_string) errors;
	struct access_rules *rules;
	const char *error;

	t_array_init(&errors, 8);
	if (access_rules_load(path, flags, &rules, &errors) < 0) {
		array_foreach_elem(&errors, error)
			fprintf(stderr, "%s\n", error);
		return NULL;
	}
	return rules;
}

static int access_rules_tool_check(const char *path)
{
	struct access_rules *rules, *compiled;
	ARRAY_TYPE(const_string) errors;

	rules = access_rules_tool_load(path, ACCESS_RULES_LOAD_FLAG_TEXT);
	if (rules == NULL)
		return ACCESS_RULES_TOOL_EXIT_INVALID;
	printf("%s: OK, %u rules in %u rule sets\n", path,
	       access_rules_count(rules), access_rules_set_count(rules));
	access_rules_free(&rules);

	/* say whether logins will use the compiled file */
	t_array_init(&errors, 1);
	if (access_rules_load(path, 0, &compiled, &errors) == 0) {
		const char *cpath = t_strconcat(path, ".compiled", NULL);
		struct stat st;

		if (access_rules_is_compiled(compiled))
			printf("%s: up to date\n", cpath);
		else if (access_rules_get_warning(compiled) != NULL)
			printf("%s\n", access_rules_get_warning(compiled));
		else if (stat(cpath, &st) == 0) {
			printf("%s: out of date, logins read the text until "
			       "you run: access-rules compile %s\n", cpath, path);
		}
		access_rules_free(&compiled);
	}
	return ACCESS_RULES_TOOL_EXIT_OK;
}

static int access_rules_tool_compile(const char *path)
{
	struct access_rules *rules;
	const char *error;
	int ret = ACCESS_RULES_TOOL_EXIT_OK;

	rules = access_rules_tool_load(path, ACCESS_RULES_LOAD_FLAG_TEXT);
	if (rules == NULL)
		return ACCESS_RULES_TOOL_EXIT_INVALID;
	if (access_rules_compile(rules, &error) < 0) {
		fprintf(stderr, "%s: can't compile: %s\n", path, error);
		ret = ACCESS_RULES_TOOL_EXIT_INVALID;
	} else {
		printf("%s.compiled: %u rules in %u rule sets\n", path,
		       access_rules_count(rules), access_rules_set_count(rules));
	}
	access_rules_free(&rules);
	return ret;
}

static int access_rules_tool_parse_time(const char *str, time_t *time_r)
{
	struct tm tm;
	char end;

	i_zero(&tm);
	if (sscanf(str, "%d-%d-%d %d:%d%c", &tm.tm_year, &tm.tm_mon,
		   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &end) != 5)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	tm.tm_isdst = -1;
	*time_r = mktime(&tm);
	return *time_r == (time_t)-1 ? -1 : 0;
}

static void
access_rules_tool_print(const struct access_rules *rules,
			const struct access_rules_decision *decision)
{
	const char *path = access_rules_get_path(rules);
	string_t *str = t_str_new(128);
	unsigned int i;

	str_append(str, access_rule_action_to_string(decision->action));
	if (decision->rule_line != 0)
		str_printfa(str, " by %s:%u", path, decision->rule_line);
	else if (decision->default_line != 0)
		str_printfa(str, " by %s:%u (default of rule set %s)", path,
			    decision->default_line, decision->ruleset);
	else
		str_printfa(str, " by the built-in default (no rule of set "
			    "%s matched)", decision->ruleset);
	if (decision->reason != NULL)
		str_printfa(str, ": %s", decision->reason);
	printf("%s\n", str_c(str));

	if (decision->mailboxes != NULL) {
		printf("visible mailboxes: %s\n",
		       t_strarray_join(decision->mailboxes, ", "));
	}
	if (decision->hidden_mailboxes != NULL) {
		printf("hidden mailboxes: %s\n",
		       t_strarray_join(decision->hidden_mailboxes, ", "));
	}
	if (decision->max_sessions != 0)
		printf("sessions: at most %u\n", decision->max_sessions);
	for (i = 0; i < ACCESS_RULE_PROTOCOL_COUNT; i++) {
		if (decision->max_protocol_sessions[i] != 0) {
			printf("%s sessions: at most %u\n",
			       access_rule_protocol_to_string(i),
			       decision->max_protocol_sessions[i]);
		}
	}
}

static int access_rules_tool_test(int argc, char *argv[])
{
	static const struct option options[] = {
		{ "user", required_argument, NULL, 'u' },
		{ "protocol", required_argument, NULL, 'p' },
		{ "ip", required_argument, NULL, 'i' },
		{ "tls", no_argument, NULL, 's' },
		{ "port", required_argument, NULL, 'P' },
		{ "groups", required_argument, NULL, 'g' },
		{ "client-id", required_argument, NULL, 'c' },
		{ "client-version", required_argument, NULL, 'v' },
		{ "ruleset", required_argument, NULL, 'r' },
		{ "time", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 }
	};
	struct access_rules_session session;
	struct access_rules_decision decision;
	struct access_rules *rules;
	const char *path, *ruleset = ACCESS_RULES_DEFAULT_SET, *error;
	bool have_protocol = FALSE, have_ip = FALSE;
	int c, ret;

	i_zero(&session);
	session.now = time(NULL);
	/* argv[0] is "test", argv[1] the file */
	if (argc < 2)
		return access_rules_tool_usage("test: missing FILE");
	path = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'u':
			session.username = optarg;
			break;
		case 'p':
			if (access_rule_protocol_parse(optarg,
						       &session.protocol) < 0) {
				return access_rules_tool_usage(
					"unknown protocol \"%s\" "
					"(expected imap or pop3)", optarg);
			}
			have_protocol = TRUE;
			break;
		case 'i':
			if (net_addr2ip(optarg, &session.remote_ip) < 0) {
				return access_rules_tool_usage(
					"invalid IP address \"%s\"", optarg);
			}
			have_ip = TRUE;
			break;
		case 's':
			session.tls = TRUE;
			break;
		case 'P':
			if (net_str2port(optarg, &session.local_port) < 0) {
				return access_rules_tool_usage(
					"invalid port \"%s\"", optarg);
			}
			break;
		case 'g':
			session.groups = t_strsplit_spaces(optarg, ", ");
			break;
		case 'c':
			session.client_name = optarg;
			break;
		case 'v':
			session.client_version = optarg;
			break;
		case 'r':
			ruleset = optarg;
			break;
		case 't':
			if (access_rules_tool_parse_time(optarg,
							 &session.now) < 0) {
				return access_rules_tool_usage(
					"invalid time \"%s\" (expected "
					"'YYYY-MM-DD HH:MM')", optarg);
			}
			break;
		default:
			return access_rules_tool_usage(NULL);
		}
	}
	if (optind != argc)
		return access_rules_tool_usage("unexpected \"%s\"", argv[optind]);
	if (session.username == NULL || !have_protocol || !have_ip) {
		return access_rules_tool_usage(
			"test needs --user, --protocol and --ip");
	}

	rules = access_rules_tool_load(path, 0);
	if (rules == NULL)
		return ACCESS_RULES_TOOL_EXIT_INVALID;
	if (access_rules_evaluate(rules, ruleset, &session, &decision,
				  &error) < 0) {
		fprintf(stderr, "%s: %s\n", path, error);
		ret = ACCESS_RULES_TOOL_EXIT_INVALID;
	} else {
		access_rules_tool_print(rules, &decision);
		ret = ACCESS_RULES_TOOL_EXIT_OK;
	}
	access_rules_free(&rules);
	return ret;
}

int main(int argc, char *argv[])
{
	int ret;

	lib_init();
	if (argc < 2)
		ret = access_rules_tool_usage(NULL);
	else if (strcmp(argv[1], "check") == 0) {
		ret = argc != 3 ?
			access_rules_tool_usage("check takes one FILE") :
			access_rules_tool_check(argv[2]);
	} else if (strcmp(argv[1], "compile") == 0) {
		ret = argc != 3 ?
			access_rules_tool_usage("compile takes one FILE") :
			access_rules_tool_compile(argv[2]);
	} else if (strcmp(argv[1], "test") == 0)
		ret = access_rules_tool_test(argc - 1, argv + 1);
	else
		ret = access_rules_tool_usage("unknown command \"%s\"", argv[1]);
	lib_deinit();
	return ret;
}
