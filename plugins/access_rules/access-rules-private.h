#ifndef ACCESS_RULES_PRIVATE_H
#define ACCESS_RULES_PRIVATE_H

#include "array.h"
#include "access-rules.h"

/* A condition's values. A condition holds when (it has no positive value
   or any positive value matches) and no negated value matches. */
struct access_rule_strings {
	ARRAY_TYPE(const_string) positive, negative;
};

struct access_rule_net {
	struct ip_addr ip;
	unsigned int bits;
};
ARRAY_DEFINE_TYPE(access_rule_net, struct access_rule_net);

struct access_rule_nets {
	ARRAY_TYPE(access_rule_net) positive, negative;
};

struct access_rule_port_range {
	in_port_t first, last;
};
ARRAY_DEFINE_TYPE(access_rule_port_range, struct access_rule_port_range);

struct access_rule_ports {
	ARRAY_TYPE(access_rule_port_range) positive, negative;
};

enum access_rule_tls {
	ACCESS_RULE_TLS_ANY = 0,
	ACCESS_RULE_TLS_YES,
	ACCESS_RULE_TLS_NO,
};

struct access_rule {
	/* position in its rule set: first match wins, so lower wins */
	unsigned int index;
	unsigned int line;
	enum access_rule_action action;
	const char *reason;

	/* bit (1 << enum access_rule_protocol) set for each protocol the
	   rule applies to */
	unsigned int protocols;
	/* NULL when the rule has no such condition */
	struct access_rule_strings *users, *domains, *groups;
	struct access_rule_strings *client_names, *client_versions;
	struct access_rule_nets *nets;
	struct access_rule_ports *ports;
	enum access_rule_tls tls;
	bool has_time;
	/* minutes since midnight; the window is [start, end) and wraps
	   past midnight when end < start */
	unsigned int time_start, time_end;
	/* bit (1 << tm_wday) for each day; 0 = every day */
	unsigned int days;

	const char *const *mailboxes, *const *hidden_mailboxes;
	unsigned int max_sessions;
	unsigned int max_protocol_sessions[ACCESS_RULE_PROTOCOL_COUNT];
};
ARRAY_DEFINE_TYPE(access_rule, struct access_rule *);

struct access_rules_index;

struct access_rule_set {
	const char *name;
	unsigned int line;

	enum access_rule_action default_action;
	const char *default_reason;
	unsigned int default_line;

	ARRAY_TYPE(access_rule) rules;
	bool has_session_caps;
	bool has_client_id_rules;

	/* one compiled index per protocol, so that protocol conditions cost
	   nothing at evaluation time */
	struct access_rules_index *index[ACCESS_RULE_PROTOCOL_COUNT];
};

struct access_rules {
	pool_t pool;
	const char *path;
	ARRAY(struct access_rule_set *) sets;
	unsigned int rule_count;
};

struct access_rule_set *
access_rules_find_set(const struct access_rules *rules, const char *name);

/* access-rules-index.c */
struct access_rules_index *
access_rules_index_build(pool_t pool, const struct access_rule_set *set,
			 enum access_rule_protocol protocol);
/* Returns the first rule that matches the session, or NULL. */
const struct access_rule *
access_rules_index_lookup(const struct access_rules_index *index,
			  const struct access_rules_session *session);
bool access_rule_match(const struct access_rule *rule,
		       const struct access_rules_session *session);

#endif
