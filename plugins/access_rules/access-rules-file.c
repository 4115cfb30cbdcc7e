/* Reads the rules file. The grammar is in docs/access_rules.md; every
   error names file:line and quotes the value it did not accept. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "strescape.h"
#include "access-rules-private.h"

#include <ctype.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

/* A rules file is written by hand; anything this large is a mistake
   (or the wrong file) and would only slow every login down. */
#define ACCESS_RULES_MAX_FILE_SIZE (64 * 1024 * 1024)
/* After this many errors the rest are likely to be consequences. */
#define ACCESS_RULES_MAX_ERRORS 50

enum access_rules_token_type {
	ACCESS_RULES_TOKEN_WORD,
	ACCESS_RULES_TOKEN_QUOTED,
	ACCESS_RULES_TOKEN_COMMA,
};

struct access_rules_token {
	enum access_rules_token_type type;
	const char *value;
	bool negated;
};
ARRAY_DEFINE_TYPE(access_rules_token, struct access_rules_token);

struct access_rules_parser {
	struct access_rules *rules;
	struct access_rule_set *set;
	unsigned int line;
	const char *line_error;

	const struct access_rules_token *tokens;
	unsigned int token_count, pos;
};

static const char *access_rules_day_names[] = {
	"sun", "mon", "tue", "wed", "thu", "fri", "sat"
};

/* Records the line's error. Each line stops at its first error, and
   the caller moves it out of the line's data stack frame. */
static void ATTR_FORMAT(2, 3)
access_rules_parser_error(struct access_rules_parser *parser,
			  const char *fmt, ...)
{
	va_list args;

	if (parser->line_error != NULL)
		return;
	va_start(args, fmt);
	parser->line_error = t_strdup_printf("%s:%u: %s", parser->rules->path,
					     parser->line,
					     t_strdup_vprintf(fmt, args));
	va_end(args);
}

/* Splits one logical line into tokens. Returns 0, or -1 with error_r. */
static int
access_rules_tokenize(const char *line, ARRAY_TYPE(access_rules_token) *tokens,
		      const char **error_r)
{
	const char *p = line;
	string_t *str;

	while (*p != '\0') {
		struct access_rules_token token;

		if (*p == ' ' || *p == '\t' || *p == '\r') {
			p++;
			continue;
		}
		if (*p == '#')
			break;
		i_zero(&token);
		if (*p == ',') {
			token.type = ACCESS_RULES_TOKEN_COMMA;
			token.value = ",";
			array_push_back(tokens, &token);
			p++;
			continue;
		}
		if (*p == '!') {
			token.negated = TRUE;
			p++;
			if (*p == '\0' || *p == ' ' || *p == '\t' || *p == ',') {
				*error_r = "\"!\" must be followed by a value";
				return -1;
			}
		}
		if (*p == '"') {
			str = t_str_new(64);
			for (p++; *p != '"'; p++) {
				if (*p == '\0') {
					*error_r = "missing closing quote";
					return -1;
				}
				if (*p == '\\' && p[1] != '\0')
					p++;
				str_append_c(str, *p);
			}
			p++;
			token.type = ACCESS_RULES_TOKEN_QUOTED;
			token.value = str_c(str);
		} else {
			const char *start = p;

			while (*p != '\0' && *p != ' ' && *p != '\t' &&
			       *p != '\r' && *p != ',' && *p != '#' &&
			       *p != '"')
				p++;
			token.type = ACCESS_RULES_TOKEN_WORD;
			token.value = t_strdup_until(start, p);
		}
		array_push_back(tokens, &token);
	}
	return 0;
}

static const struct access_rules_token *
access_rules_parser_next(struct access_rules_parser *parser)
{
	if (parser->pos >= parser->token_count)
		return NULL;
	return &parser->tokens[parser->pos++];
}

/* Reads "value[,value...]" after a keyword. Returns 0, or -1 after
   reporting an error. */
static int
access_rules_parse_values(struct access_rules_parser *parser,
			  const char *keyword, bool allow_negation,
			  ARRAY_TYPE(access_rules_token) *values)
{
	const struct access_rules_token *token;

	t_array_init(values, 4);
	for (;;) {
		token = access_rules_parser_next(parser);
		if (token == NULL || token->type == ACCESS_RULES_TOKEN_COMMA) {
			access_rules_parser_error(parser,
				"\"%s\" needs a value", keyword);
			return -1;
		}
		if (token->negated && !allow_negation) {
			access_rules_parser_error(parser,
				"\"%s\" can't be negated: \"!%s\"",
				keyword, token->value);
			return -1;
		}
		array_push_back(values, token);
		if (parser->pos < parser->token_count &&
		    parser->tokens[parser->pos].type ==
		    ACCESS_RULES_TOKEN_COMMA)
			parser->pos++;
		else
			return 0;
	}
}

static int
access_rules_parse_single(struct access_rules_parser *parser,
			  const char *keyword, const char **value_r)
{
	ARRAY_TYPE(access_rules_token) values;
	const struct access_rules_token *value;

	if (access_rules_parse_values(parser, keyword, FALSE, &values) < 0)
		return -1;
	if (array_count(&values) != 1) {
		access_rules_parser_error(parser,
			"\"%s\" takes a single value", keyword);
		return -1;
	}
	value = array_front(&values);
	*value_r = value->value;
	return 0;
}

static int
access_rules_parse_strings(struct access_rules_parser *parser,
			   const char *keyword,
			   struct access_rule_strings **strings_r)
{
	ARRAY_TYPE(access_rules_token) values;
	const struct access_rules_token *value;
	struct access_rule_strings *strings;
	pool_t pool = parser->rules->pool;

	if (access_rules_parse_values(parser, keyword, TRUE, &values) < 0)
		return -1;
	strings = p_new(pool, struct access_rule_strings, 1);
	p_array_init(&strings->positive, pool, array_count(&values));
	p_array_init(&strings->negative, pool, 1);
	array_foreach(&values, value) {
		const char *str = p_strdup(pool, t_str_lcase(value->value));

		if (value->value[0] == '\0') {
			access_rules_parser_error(parser,
				"\"%s\" value can't be empty", keyword);
			return -1;
		}
		if (value->negated)
			array_push_back(&strings->negative, &str);
		else
			array_push_back(&strings->positive, &str);
	}
	*strings_r = strings;
	return 0;
}

static int
access_rules_parse_protocols(struct access_rules_parser *parser,
			     unsigned int *protocols_r)
{
	ARRAY_TYPE(access_rules_token) values;
	const struct access_rules_token *value;
	enum access_rule_protocol protocol;
	unsigned int positive = 0, negative = 0;

	if (access_rules_parse_values(parser, "protocol", TRUE, &values) < 0)
		return -1;
	array_foreach(&values, value) {
		if (access_rule_protocol_parse(value->value, &protocol) < 0) {
			access_rules_parser_error(parser,
				"unknown protocol \"%s\" (expected imap or pop3)",
				value->value);
			return -1;
		}
		if (value->negated)
			negative |= 1U << protocol;
		else
			positive |= 1U << protocol;
	}
	if (positive == 0)
		positive = (1U << ACCESS_RULE_PROTOCOL_COUNT) - 1;
	*protocols_r = positive & ~negative;
	if (*protocols_r == 0) {
		access_rules_parser_error(parser,
			"\"protocol\" excludes every protocol");
		return -1;
	}
	return 0;
}

static int
access_rules_parse_net(struct access_rules_parser *parser, const char *value,
		       struct access_rule_net *net_r)
{
	struct ip_addr masked;
	unsigned int max_bits;

	if (net_parse_range(value, &net_r->ip, &net_r->bits) < 0) {
		access_rules_parser_error(parser,
			"invalid network \"%s\" (expected an IPv4 or IPv6 "
			"address, optionally with /bits)", value);
		return -1;
	}
	/* a typo such as 10.1.2.3/8 usually means the admin meant a
	   different network than the one it would silently become */
	max_bits = IPADDR_IS_V4(&net_r->ip) ? 32 : 128;
	if (net_r->bits < max_bits) {
		masked = net_r->ip;
		if (IPADDR_IS_V4(&masked)) {
			uint32_t mask = net_r->bits == 0 ? 0 :
				htonl(0xffffffffU << (32 - net_r->bits));
			masked.u.ip4.s_addr &= mask;
		} else {
			unsigned int i;

			for (i = 0; i < 16; i++) {
				unsigned int bit = i * 8;
				unsigned char mask = bit >= net_r->bits ? 0 :
					bit + 8 <= net_r->bits ? 0xff :
					(unsigned char)(0xff << (8 - (net_r->bits - bit)));
				masked.u.ip6.s6_addr[i] &= mask;
			}
		}
		if (!net_ip_compare(&masked, &net_r->ip)) {
			access_rules_parser_error(parser,
				"network \"%s\" has host bits set "
				"(did you mean %s/%u?)", value,
				net_ip2addr(&masked), net_r->bits);
			return -1;
		}
	}
	return 0;
}

static int
access_rules_parse_nets(struct access_rules_parser *parser,
			struct access_rule_nets **nets_r)
{
	ARRAY_TYPE(access_rules_token) values;
	const struct access_rules_token *value;
	struct access_rule_nets *nets;
	struct access_rule_net net;
	pool_t pool = parser->rules->pool;

	if (access_rules_parse_values(parser, "from", TRUE, &values) < 0)
		return -1;
	nets = p_new(pool, struct access_rule_nets, 1);
	p_array_init(&nets->positive, pool, array_count(&values));
	p_array_init(&nets->negative, pool, 1);
	array_foreach(&values, value) {
		if (access_rules_parse_net(parser, value->value, &net) < 0)
			return -1;
		if (value->negated)
			array_push_back(&nets->negative, &net);
		else
			array_push_back(&nets->positive, &net);
	}
	*nets_r = nets;
	return 0;
}

static int
access_rules_parse_port_number(const char *str, in_port_t *port_r)
{
	uintmax_t num;

	if (str_to_uintmax(str, &num) < 0 || num == 0 || num > 65535)
		return -1;
	*port_r = (in_port_t)num;
	return 0;
}

static int
access_rules_parse_ports(struct access_rules_parser *parser,
			 struct access_rule_ports **ports_r)
{
	ARRAY_TYPE(access_rules_token) values;
	const struct access_rules_token *value;
	struct access_rule_ports *ports;
	struct access_rule_port_range range;
	const char *dash;
	pool_t pool = parser->rules->pool;
	int ret;

	if (access_rules_parse_values(parser, "port", TRUE, &values) < 0)
		return -1;
	ports = p_new(pool, struct access_rule_ports, 1);
	p_array_init(&ports->positive, pool, array_count(&values));
	p_array_init(&ports->negative, pool, 1);
	array_foreach(&values, value) {
		dash = strchr(value->value, '-');
		if (dash == NULL) {
			ret = access_rules_parse_port_number(value->value,
							     &range.first);
			range.last = range.first;
		} else {
			ret = access_rules_parse_port_number(
				t_strdup_until(value->value, dash), &range.first);
			if (ret == 0) {
				ret = access_rules_parse_port_number(dash + 1,
								     &range.last);
			}
			if (ret == 0 && range.last < range.first)
				ret = -1;
		}
		if (ret < 0) {
			access_rules_parser_error(parser,
				"invalid port \"%s\" (expected 1-65535 or a "
				"range such as 993-995)", value->value);
			return -1;
		}
		if (value->negated)
			array_push_back(&ports->negative, &range);
		else
			array_push_back(&ports->positive, &range);
	}
	*ports_r = ports;
	return 0;
}

static int access_rules_parse_clock(const char *str, unsigned int *minutes_r)
{
	unsigned int hours, minutes;

	if (!i_isdigit(str[0]) || !i_isdigit(str[1]) || str[2] != ':' ||
	    !i_isdigit(str[3]) || !i_isdigit(str[4]) || str[5] != '\0')
		return -1;
	hours = (str[0] - '0') * 10 + (str[1] - '0');
	minutes = (str[3] - '0') * 10 + (str[4] - '0');
	if (minutes > 59 || hours > 24 || (hours == 24 && minutes != 0))
		return -1;
	*minutes_r = hours * 60 + minutes;
	return 0;
}

static int
access_rules_parse_time(struct access_rules_parser *parser,
			struct access_rule *rule)
{
	const char *value, *dash;

	if (access_rules_parse_single(parser, "time", &value) < 0)
		return -1;
	dash = strchr(value, '-');
	if (dash == NULL ||
	    access_rules_parse_clock(t_strdup_until(value, dash),
				     &rule->time_start) < 0 ||
	    access_rules_parse_clock(dash + 1, &rule->time_end) < 0) {
		access_rules_parser_error(parser,
			"invalid time window \"%s\" (expected HH:MM-HH:MM)",
			value);
		return -1;
	}
	if (rule->time_start == rule->time_end) {
		access_rules_parser_error(parser,
			"time window \"%s\" is empty", value);
		return -1;
	}
	rule->has_time = TRUE;
	return 0;
}

static int access_rules_parse_day(const char *name, unsigned int *wday_r)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(access_rules_day_names); i++) {
		if (strcasecmp(name, access_rules_day_names[i]) == 0) {
			*wday_r = i;
			return 0;
		}
	}
	return -1;
}

static int
access_rules_parse_days(struct access_rules_parser *parser,
			struct access_rule *rule)
{
	ARRAY_TYPE(access_rules_token) values;
	const struct access_rules_token *value;
	unsigned int first, last, day;
	const char *dash;
	int ret;

	if (access_rules_parse_values(parser, "days", FALSE, &values) < 0)
		return -1;
	array_foreach(&values, value) {
		dash = strchr(value->value, '-');
		if (dash == NULL) {
			ret = access_rules_parse_day(value->value, &first);
			last = first;
		} else {
			ret = access_rules_parse_day(
				t_strdup_until(value->value, dash), &first);
			if (ret == 0)
				ret = access_rules_parse_day(dash + 1, &last);
		}
		if (ret < 0) {
			access_rules_parser_error(parser,
				"invalid day \"%s\" (expected mon..sun or a "
				"range such as mon-fri)", value->value);
			return -1;
		}
		/* ranges may wrap around the week: fri-mon */
		for (day = first;; day = (day + 1) % 7) {
			rule->days |= 1U << day;
			if (day == last)
				break;
		}
	}
	return 0;
}

static int
access_rules_parse_count(struct access_rules_parser *parser,
			 const char *keyword, unsigned int *count_r)
{
	const char *value;

	if (access_rules_parse_single(parser, keyword, &value) < 0)
		return -1;
	if (str_to_uint(value, count_r) < 0 || *count_r == 0) {
		access_rules_parser_error(parser,
			"invalid \"%s\" value \"%s\" (expected a number "
			"of sessions, 1 or more)", keyword, value);
		return -1;
	}
	return 0;
}

static int
access_rules_parse_mailboxes(struct access_rules_parser *parser,
			     struct access_rule *rule)
{
	ARRAY_TYPE(access_rules_token) values;
	const struct access_rules_token *value;
	ARRAY_TYPE(const_string) visible, hidden;
	pool_t pool = parser->rules->pool;

	if (access_rules_parse_values(parser, "mailboxes", TRUE, &values) < 0)
		return -1;
	p_array_init(&visible, pool, array_count(&values) + 1);
	p_array_init(&hidden, pool, 2);
	array_foreach(&values, value) {
		const char *pattern = p_strdup(pool, value->value);

		if (*pattern == '\0') {
			access_rules_parser_error(parser,
				"\"mailboxes\" pattern can't be empty");
			return -1;
		}
		if (value->negated)
			array_push_back(&hidden, &pattern);
		else
			array_push_back(&visible, &pattern);
	}
	if (array_count(&visible) > 0) {
		array_append_zero(&visible);
		rule->mailboxes = array_front(&visible);
	}
	if (array_count(&hidden) > 0) {
		array_append_zero(&hidden);
		rule->hidden_mailboxes = array_front(&hidden);
	}
	return 0;
}

static int
access_rules_parse_action(const char *word, enum access_rule_action *action_r)
{
	if (strcmp(word, "allow") == 0)
		*action_r = ACCESS_RULE_ACTION_ALLOW;
	else if (strcmp(word, "deny") == 0)
		*action_r = ACCESS_RULE_ACTION_DENY;
	else if (strcmp(word, "readonly") == 0)
		*action_r = ACCESS_RULE_ACTION_READONLY;
	else
		return -1;
	return 0;
}

/* Parses the keyword at the current position into rule. Returns 0, or -1
   after reporting an error. */
static int
access_rules_parse_keyword(struct access_rules_parser *parser,
			   struct access_rule *rule, const char *keyword)
{
	if (strcmp(keyword, "protocol") == 0)
		return access_rules_parse_protocols(parser, &rule->protocols);
	if (strcmp(keyword, "user") == 0)
		return access_rules_parse_strings(parser, keyword, &rule->users);
	if (strcmp(keyword, "domain") == 0)
		return access_rules_parse_strings(parser, keyword, &rule->domains);
	if (strcmp(keyword, "group") == 0)
		return access_rules_parse_strings(parser, keyword, &rule->groups);
	if (strcmp(keyword, "client-name") == 0)
		return access_rules_parse_strings(parser, keyword,
						  &rule->client_names);
	if (strcmp(keyword, "client-version") == 0)
		return access_rules_parse_strings(parser, keyword,
						  &rule->client_versions);
	if (strcmp(keyword, "from") == 0)
		return access_rules_parse_nets(parser, &rule->nets);
	if (strcmp(keyword, "port") == 0)
		return access_rules_parse_ports(parser, &rule->ports);
	if (strcmp(keyword, "tls") == 0) {
		const char *value;

		if (access_rules_parse_single(parser, keyword, &value) < 0)
			return -1;
		if (strcmp(value, "yes") == 0)
			rule->tls = ACCESS_RULE_TLS_YES;
		else if (strcmp(value, "no") == 0)
			rule->tls = ACCESS_RULE_TLS_NO;
		else {
			access_rules_parser_error(parser,
				"invalid tls value \"%s\" (expected yes or no)",
				value);
			return -1;
		}
		return 0;
	}
	if (strcmp(keyword, "time") == 0)
		return access_rules_parse_time(parser, rule);
	if (strcmp(keyword, "days") == 0)
		return access_rules_parse_days(parser, rule);
	if (strcmp(keyword, "reason") == 0) {
		const char *value;

		if (access_rules_parse_single(parser, keyword, &value) < 0)
			return -1;
		if (strpbrk(value, "\r\n") != NULL || value[0] == '\0') {
			access_rules_parser_error(parser,
				"reason must be a non-empty single line");
			return -1;
		}
		rule->reason = p_strdup(parser->rules->pool, value);
		return 0;
	}
	if (strcmp(keyword, "mailboxes") == 0)
		return access_rules_parse_mailboxes(parser, rule);
	if (strcmp(keyword, "sessions") == 0)
		return access_rules_parse_count(parser, keyword,
						&rule->max_sessions);
	if (strcmp(keyword, "imap-sessions") == 0)
		return access_rules_parse_count(parser, keyword,
			&rule->max_protocol_sessions[ACCESS_RULE_PROTOCOL_IMAP]);
	if (strcmp(keyword, "pop3-sessions") == 0)
		return access_rules_parse_count(parser, keyword,
			&rule->max_protocol_sessions[ACCESS_RULE_PROTOCOL_POP3]);

	access_rules_parser_error(parser, "unknown keyword \"%s\"", keyword);
	return -1;
}

static void
access_rules_parse_rule(struct access_rules_parser *parser,
			enum access_rule_action action, const char *text)
{
	const struct access_rules_token *token;
	struct access_rule *rule;
	ARRAY_TYPE(const_string) seen;
	bool caps;

	rule = p_new(parser->rules->pool, struct access_rule, 1);
	rule->line = parser->line;
	rule->text = p_strdup(parser->rules->pool, text);
	rule->action = action;
	rule->protocols = (1U << ACCESS_RULE_PROTOCOL_COUNT) - 1;

	t_array_init(&seen, 8);
	while ((token = access_rules_parser_next(parser)) != NULL) {
		if (token->type != ACCESS_RULES_TOKEN_WORD || token->negated) {
			access_rules_parser_error(parser,
				"expected a keyword, found \"%s%s\"",
				token->negated ? "!" : "", token->value);
			return;
		}
		if (array_lsearch(&seen, &token->value, i_strcmp_p) != NULL) {
			access_rules_parser_error(parser,
				"\"%s\" given twice in one rule", token->value);
			return;
		}
		array_push_back(&seen, &token->value);
		if (access_rules_parse_keyword(parser, rule, token->value) < 0)
			return;
	}

	caps = rule->max_sessions != 0 ||
		rule->max_protocol_sessions[ACCESS_RULE_PROTOCOL_IMAP] != 0 ||
		rule->max_protocol_sessions[ACCESS_RULE_PROTOCOL_POP3] != 0;
	if (action == ACCESS_RULE_ACTION_DENY &&
	    (rule->mailboxes != NULL || rule->hidden_mailboxes != NULL ||
	     caps)) {
		access_rules_parser_error(parser,
			"\"deny\" takes no \"mailboxes\" or sessions options");
		return;
	}
	if (action == ACCESS_RULE_ACTION_ALLOW && rule->reason != NULL) {
		access_rules_parser_error(parser,
			"\"reason\" is only shown for deny and readonly rules");
		return;
	}

	rule->index = array_count(&parser->set->rules);
	array_push_back(&parser->set->rules, &rule);
	parser->rules->rule_count++;
	if (caps)
		parser->set->has_session_caps = TRUE;
	if (rule->client_names != NULL || rule->client_versions != NULL)
		parser->set->has_client_id_rules = TRUE;
}

static struct access_rule_set *
access_rules_add_set(struct access_rules *rules, const char *name,
		     unsigned int line)
{
	struct access_rule_set *set;

	set = p_new(rules->pool, struct access_rule_set, 1);
	set->name = p_strdup(rules->pool, name);
	set->line = line;
	set->default_action = ACCESS_RULE_ACTION_ALLOW;
	p_array_init(&set->rules, rules->pool, 16);
	array_push_back(&rules->sets, &set);
	return set;
}

static void access_rules_parse_ruleset(struct access_rules_parser *parser)
{
	const struct access_rules_token *token;

	token = access_rules_parser_next(parser);
	if (token == NULL || token->type == ACCESS_RULES_TOKEN_COMMA ||
	    token->negated || parser->pos != parser->token_count) {
		access_rules_parser_error(parser,
			"\"ruleset\" takes exactly one name");
		return;
	}
	if (access_rules_find_set(parser->rules, token->value) != NULL) {
		access_rules_parser_error(parser,
			"rule set \"%s\" is defined twice", token->value);
		return;
	}
	parser->set = access_rules_add_set(parser->rules, token->value,
					   parser->line);
}

static void access_rules_parse_default(struct access_rules_parser *parser)
{
	const struct access_rules_token *token;
	enum access_rule_action action;
	const char *reason = NULL;

	token = access_rules_parser_next(parser);
	if (token == NULL || token->type != ACCESS_RULES_TOKEN_WORD ||
	    token->negated ||
	    access_rules_parse_action(token->value, &action) < 0) {
		access_rules_parser_error(parser,
			"\"default\" must be followed by allow, deny or "
			"readonly, found \"%s\"",
			token == NULL ? "" : token->value);
		return;
	}
	token = access_rules_parser_next(parser);
	if (token != NULL) {
		if (strcmp(token->value, "reason") != 0 ||
		    token->type != ACCESS_RULES_TOKEN_WORD) {
			access_rules_parser_error(parser,
				"unexpected \"%s\" after default action",
				token->value);
			return;
		}
		if (access_rules_parse_single(parser, "reason", &reason) < 0)
			return;
		if (parser->pos != parser->token_count) {
			access_rules_parser_error(parser,
				"unexpected \"%s\" after reason",
				parser->tokens[parser->pos].value);
			return;
		}
	}
	if (parser->set->default_line != 0) {
		access_rules_parser_error(parser,
			"rule set \"%s\" already has a default (line %u)",
			parser->set->name, parser->set->default_line);
		return;
	}
	if (action == ACCESS_RULE_ACTION_ALLOW && reason != NULL) {
		access_rules_parser_error(parser,
			"\"reason\" is only shown for deny and readonly");
		return;
	}
	parser->set->default_action = action;
	parser->set->default_reason = p_strdup(parser->rules->pool, reason);
	parser->set->default_line = parser->line;
}

static void
access_rules_parse_line(struct access_rules_parser *parser, const char *line)
{
	ARRAY_TYPE(access_rules_token) tokens;
	const struct access_rules_token *first;
	enum access_rule_action action;
	const char *error;

	t_array_init(&tokens, 16);
	if (access_rules_tokenize(line, &tokens, &error) < 0) {
		access_rules_parser_error(parser, "%s", error);
		return;
	}
	if (array_count(&tokens) == 0)
		return;
	parser->tokens = array_get(&tokens, &parser->token_count);
	parser->pos = 1;
	first = &parser->tokens[0];
	if (first->type != ACCESS_RULES_TOKEN_WORD || first->negated) {
		access_rules_parser_error(parser,
			"a line must start with allow, deny, readonly, "
			"default or ruleset, found \"%s\"", first->value);
	} else if (strcmp(first->value, "ruleset") == 0)
		access_rules_parse_ruleset(parser);
	else if (strcmp(first->value, "default") == 0)
		access_rules_parse_default(parser);
	else if (access_rules_parse_action(first->value, &action) == 0)
		access_rules_parse_rule(parser, action, line);
	else {
		access_rules_parser_error(parser,
			"unknown action \"%s\" (expected allow, deny, "
			"readonly, default or ruleset)", first->value);
	}
}

struct access_rule_set *
access_rules_find_set(const struct access_rules *rules, const char *name)
{
	struct access_rule_set *set;

	array_foreach_elem(&rules->sets, set) {
		if (strcmp(set->name, name) == 0)
			return set;
	}
	return NULL;
}

static struct access_rules *
access_rules_parse_into(pool_t pool, const char *path, const char *text,
			unsigned int first_line,
			ARRAY_TYPE(const_string) *errors_r)
{
	struct access_rules_parser parser;
	struct access_rules *rules;
	string_t *logical;
	const char *p, *end;
	unsigned int line = first_line - 1, start_line = 0;

	rules = p_new(pool, struct access_rules, 1);
	rules->pool = pool;
	rules->path = p_strdup(pool, path);
	p_array_init(&rules->sets, pool, 4);

	i_zero(&parser);
	parser.rules = rules;
	parser.set = access_rules_add_set(rules, ACCESS_RULES_DEFAULT_SET, 0);

	/* a line ending in a backslash continues on the next one, so that
	   long rules stay readable */
	logical = t_str_new(256);
	for (p = text; *p != '\0'; p = end) {
		end = strchr(p, '\n');
		if (end == NULL)
			end = p + strlen(p);
		line++;
		if (str_len(logical) == 0)
			start_line = line;
		str_append_data(logical, p, end - p);
		if (*end == '\n')
			end++;
		if (str_len(logical) > 0 &&
		    str_c(logical)[str_len(logical) - 1] == '\r')
			str_truncate(logical, str_len(logical) - 1);
		if (str_len(logical) > 0 &&
		    str_c(logical)[str_len(logical) - 1] == '\\' &&
		    *end != '\0') {
			str_truncate(logical, str_len(logical) - 1);
			str_append_c(logical, ' ');
			continue;
		}
		parser.line = start_line;
		parser.line_error = NULL;
		T_BEGIN {
			access_rules_parse_line(&parser, str_c(logical));
		} T_END_PASS_STR_IF(parser.line_error != NULL,
				    &parser.line_error);
		if (parser.line_error != NULL &&
		    array_count(errors_r) < ACCESS_RULES_MAX_ERRORS)
			array_push_back(errors_r, &parser.line_error);
		str_truncate(logical, 0);
	}
	return rules;
}

int access_rules_parse(const char *path, const char *text,
		       struct access_rules **rules_r,
		       ARRAY_TYPE(const_string) *errors_r)
{
	struct access_rules *rules;
	struct access_rule_set *set;
	pool_t pool;

	pool = pool_alloconly_create("access rules", 4096);
	rules = access_rules_parse_into(pool, path, text, 1, errors_r);
	if (array_count(errors_r) > 0) {
		pool_unref(&pool);
		return -1;
	}
	array_foreach_elem(&rules->sets, set)
		set->index = access_rules_index_build(pool, set);
	*rules_r = rules;
	return 0;
}

int access_rules_parse_rule_text(pool_t pool, const char *path,
				 unsigned int line, const char *text,
				 const struct access_rule **rule_r,
				 const char **error_r)
{
	ARRAY_TYPE(const_string) errors;
	struct access_rules *rules;
	struct access_rule_set *set;

	t_array_init(&errors, 1);
	rules = access_rules_parse_into(pool, path, text, line, &errors);
	if (array_count(&errors) > 0) {
		*error_r = array_idx_elem(&errors, 0);
		return -1;
	}
	set = array_idx_elem(&rules->sets, 0);
	if (array_count(&rules->sets) != 1 || array_count(&set->rules) != 1) {
		*error_r = t_strdup_printf("%s:%u: not a single rule", path, line);
		return -1;
	}
	*rule_r = array_idx_elem(&set->rules, 0);
	return 0;
}

static void
access_rules_file_error(ARRAY_TYPE(const_string) *errors, const char *error)
{
	array_push_back(errors, &error);
}

int access_rules_load(const char *path, enum access_rules_load_flags flags,
		      struct access_rules **rules_r,
		      ARRAY_TYPE(const_string) *errors_r)
{
	struct access_rules_compiled *compiled;
	const char *warning = NULL;
	struct stat st;
	char *text;
	ssize_t ret;
	size_t size = 0;
	int fd, result;

	fd = open(path, O_RDONLY);
	if (fd == -1) {
		access_rules_file_error(errors_r, t_strdup_printf(
			"%s: can't open the rules file: %m", path));
		return -1;
	}
	if ((flags & ACCESS_RULES_LOAD_FLAG_TEXT) == 0) {
		result = access_rules_compiled_open(path, &compiled, &warning);
		if (result > 0) {
			pool_t pool = pool_alloconly_create("access rules", 256);
			struct access_rules *rules = p_new(pool, struct access_rules, 1);

			i_close_fd(&fd);
			rules->pool = pool;
			rules->path = p_strdup(pool, path);
			p_array_init(&rules->sets, pool, 1);
			rules->compiled = compiled;
			*rules_r = rules;
			return 0;
		}
	}
	if (fstat(fd, &st) < 0) {
		access_rules_file_error(errors_r, t_strdup_printf(
			"%s: fstat() failed: %m", path));
		i_close_fd(&fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > ACCESS_RULES_MAX_FILE_SIZE) {
		access_rules_file_error(errors_r, t_strdup_printf(
			"%s: not a regular file of at most %d bytes", path,
			ACCESS_RULES_MAX_FILE_SIZE));
		i_close_fd(&fd);
		return -1;
	}
	text = i_malloc(st.st_size + 1);
	while (size < (size_t)st.st_size &&
	       (ret = read(fd, text + size, st.st_size - size)) > 0)
		size += ret;
	if (size < (size_t)st.st_size) {
		access_rules_file_error(errors_r, t_strdup_printf(
			"%s: read() failed: %s", path,
			ret < 0 ? strerror(errno) : "file shrank while reading"));
		i_free(text);
		i_close_fd(&fd);
		return -1;
	}
	i_close_fd(&fd);
	text[size] = '\0';
	if (strlen(text) != size) {
		/* NUL bytes would silently cut the text short */
		access_rules_file_error(errors_r, t_strdup_printf(
			"%s: contains a NUL byte, not a text file", path));
		i_free(text);
		return -1;
	}
	result = access_rules_parse(path, text, rules_r, errors_r);
	i_free(text);
	if (result == 0 && warning != NULL)
		(*rules_r)->compiled_warning = p_strdup((*rules_r)->pool, warning);
	return result;
}

void access_rules_free(struct access_rules **_rules)
{
	struct access_rules *rules = *_rules;
	struct access_rule_set *set;

	if (rules == NULL)
		return;
	*_rules = NULL;
	array_foreach_elem(&rules->sets, set)
		access_rules_index_free(&set->index);
	access_rules_compiled_close(&rules->compiled);
	pool_unref(&rules->pool);
}

bool access_rules_is_compiled(const struct access_rules *rules)
{
	return rules->compiled != NULL;
}

bool access_rules_compiled_file_unchanged(const struct access_rules *rules)
{
	return rules->compiled == NULL ||
		access_rules_compiled_unchanged(rules->compiled);
}

const char *access_rules_get_warning(const struct access_rules *rules)
{
	return rules->compiled_warning;
}

const char *access_rules_get_path(const struct access_rules *rules)
{
	return rules->path;
}

unsigned int access_rules_count(const struct access_rules *rules)
{
	if (rules->compiled != NULL)
		return access_rules_compiled_count(rules->compiled);
	return rules->rule_count;
}

unsigned int access_rules_set_count(const struct access_rules *rules)
{
	if (rules->compiled != NULL)
		return access_rules_compiled_set_count(rules->compiled);
	return array_count(&rules->sets);
}

bool access_rules_has_set(const struct access_rules *rules,
			  const char *ruleset)
{
	if (rules->compiled != NULL) {
		return access_rules_compiled_set_has_session_caps(
			rules->compiled, ruleset) >= 0;
	}
	return access_rules_find_set(rules, ruleset) != NULL;
}

bool access_rules_set_has_session_caps(const struct access_rules *rules,
				       const char *ruleset)
{
	const struct access_rule_set *set;

	if (rules->compiled != NULL) {
		return access_rules_compiled_set_has_session_caps(
			rules->compiled, ruleset) > 0;
	}
	set = access_rules_find_set(rules, ruleset);
	return set != NULL && set->has_session_caps;
}

const char *access_rule_action_to_string(enum access_rule_action action)
{
	switch (action) {
	case ACCESS_RULE_ACTION_ALLOW:
		return "allow";
	case ACCESS_RULE_ACTION_DENY:
		return "deny";
	case ACCESS_RULE_ACTION_READONLY:
		return "readonly";
	}
	i_unreached();
}

int access_rule_protocol_parse(const char *name,
			       enum access_rule_protocol *protocol_r)
{
	if (strcasecmp(name, "imap") == 0)
		*protocol_r = ACCESS_RULE_PROTOCOL_IMAP;
	else if (strcasecmp(name, "pop3") == 0)
		*protocol_r = ACCESS_RULE_PROTOCOL_POP3;
	else
		return -1;
	return 0;
}

const char *access_rule_protocol_to_string(enum access_rule_protocol protocol)
{
	switch (protocol) {
	case ACCESS_RULE_PROTOCOL_IMAP:
		return "imap";
	case ACCESS_RULE_PROTOCOL_POP3:
		return "pop3";
	case ACCESS_RULE_PROTOCOL_COUNT:
		break;
	}
	i_unreached();
}
