/* Compiles a rule set so that evaluating a session does not scan every
   rule. Each rule is filed under the most selective key it has: its
   literal user names, else its positive networks (a binary prefix
   trie), else the literal domains of its user globs or its literal
   domains, else its literal groups. Rules with
   no such key go to a generic list. A lookup gathers the lists the
   session's keys reach and walks them merged in rule order, so that the
   first rule that fully matches is still the first in the file. */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "str.h"
#include "wildcard-match.h"
#include "access-rules-private.h"

#include <time.h>

ARRAY_DEFINE_TYPE(access_rule_const, const struct access_rule *);
HASH_TABLE_DEFINE_TYPE(access_rules_key, const char *,
		       ARRAY_TYPE(access_rule_const) *);

struct access_rules_trie_node {
	struct access_rules_trie_node *child[2];
	ARRAY_TYPE(access_rule_const) rules;
};

struct access_rules_index {
	pool_t pool;
	HASH_TABLE_TYPE(access_rules_key) users;
	HASH_TABLE_TYPE(access_rules_key) domains;
	HASH_TABLE_TYPE(access_rules_key) groups;
	struct access_rules_trie_node *trie_ip4, *trie_ip6;
	ARRAY_TYPE(access_rule_const) generic;
};

struct access_rules_cursor {
	const struct access_rule *const *rules;
	unsigned int count, pos;
};
ARRAY_DEFINE_TYPE(access_rules_cursor, struct access_rules_cursor);

static bool access_rules_is_literal(const char *str)
{
	return strpbrk(str, "*?") == NULL;
}

static bool access_rules_strings_literal(const struct access_rule_strings *strings)
{
	const char *str;

	if (strings == NULL || array_count(&strings->positive) == 0)
		return FALSE;
	array_foreach_elem(&strings->positive, str) {
		if (!access_rules_is_literal(str))
			return FALSE;
	}
	return TRUE;
}

/* Returns the literal domain of a user glob ("*@example.com" gives
   "example.com"), or NULL if the domain part has wildcards. */
static const char *access_rules_glob_domain(const char *glob)
{
	const char *at = strrchr(glob, '@');

	if (at == NULL || at[1] == '\0' || !access_rules_is_literal(at + 1))
		return NULL;
	return at + 1;
}

static bool
access_rules_user_domains_literal(const struct access_rule_strings *users)
{
	const char *glob;

	if (users == NULL || array_count(&users->positive) == 0)
		return FALSE;
	array_foreach_elem(&users->positive, glob) {
		if (access_rules_glob_domain(glob) == NULL)
			return FALSE;
	}
	return TRUE;
}

static void
access_rules_hash_add_key(pool_t pool, HASH_TABLE_TYPE(access_rules_key) hash,
			  const char *key, const struct access_rule *rule)
{
	ARRAY_TYPE(access_rule_const) *list;

	list = hash_table_lookup(hash, key);
	if (list == NULL) {
		list = p_new(pool, ARRAY_TYPE(access_rule_const), 1);
		p_array_init(list, pool, 2);
		hash_table_insert(hash, key, list);
	}
	/* "user a,a" would file the rule twice */
	if (array_count(list) == 0 ||
	    array_idx_elem(list, array_count(list) - 1) != rule)
		array_push_back(list, &rule);
}

static void
access_rules_hash_add(pool_t pool,
		      HASH_TABLE_TYPE(access_rules_key) hash,
		      const struct access_rule_strings *strings,
		      const struct access_rule *rule)
{
	const char *key;

	array_foreach_elem(&strings->positive, key)
		access_rules_hash_add_key(pool, hash, key, rule);
}

static bool access_rules_ip_bit(const struct ip_addr *ip, unsigned int bit)
{
	const unsigned char *bytes = IPADDR_IS_V4(ip) ?
		(const unsigned char *)&ip->u.ip4.s_addr : ip->u.ip6.s6_addr;

	return (bytes[bit / 8] & (0x80 >> (bit % 8))) != 0;
}

static void
access_rules_trie_add(struct access_rules_index *index,
		      const struct access_rule_net *net,
		      const struct access_rule *rule)
{
	struct access_rules_trie_node **nodep, *node;
	unsigned int bit;

	nodep = IPADDR_IS_V4(&net->ip) ? &index->trie_ip4 : &index->trie_ip6;
	for (bit = 0;; bit++) {
		if (*nodep == NULL)
			*nodep = p_new(index->pool, struct access_rules_trie_node, 1);
		node = *nodep;
		if (bit == net->bits)
			break;
		nodep = &node->child[access_rules_ip_bit(&net->ip, bit) ? 1 : 0];
	}
	if (!array_is_created(&node->rules))
		p_array_init(&node->rules, index->pool, 2);
	if (array_count(&node->rules) == 0 ||
	    array_idx_elem(&node->rules, array_count(&node->rules) - 1) != rule)
		array_push_back(&node->rules, &rule);
}

static void
access_rules_index_add(struct access_rules_index *index,
		       const struct access_rule *rule)
{
	const struct access_rule_net *net;

	if (access_rules_strings_literal(rule->users))
		access_rules_hash_add(index->pool, index->users, rule->users, rule);
	else if (rule->nets != NULL && array_count(&rule->nets->positive) > 0) {
		array_foreach(&rule->nets->positive, net)
			access_rules_trie_add(index, net, rule);
	} else if (access_rules_user_domains_literal(rule->users)) {
		const char *glob;

		/* "user *@example.com" can only match that domain */
		array_foreach_elem(&rule->users->positive, glob) {
			access_rules_hash_add_key(index->pool, index->domains,
				access_rules_glob_domain(glob), rule);
		}
	} else if (access_rules_strings_literal(rule->domains)) {
		access_rules_hash_add(index->pool, index->domains,
				      rule->domains, rule);
	} else if (access_rules_strings_literal(rule->groups)) {
		access_rules_hash_add(index->pool, index->groups,
				      rule->groups, rule);
	} else
		array_push_back(&index->generic, &rule);
}

struct access_rules_index *
access_rules_index_build(pool_t pool, const struct access_rule_set *set,
			 enum access_rule_protocol protocol)
{
	struct access_rules_index *index;
	struct access_rule *rule;

	index = p_new(pool, struct access_rules_index, 1);
	index->pool = pool;
	hash_table_create(&index->users, pool, 0, str_hash, strcmp);
	hash_table_create(&index->domains, pool, 0, str_hash, strcmp);
	hash_table_create(&index->groups, pool, 0, str_hash, strcmp);
	p_array_init(&index->generic, pool, 8);
	array_foreach_elem(&set->rules, rule) {
		if ((rule->protocols & (1U << protocol)) != 0)
			access_rules_index_add(index, rule);
	}
	return index;
}

static bool
access_rules_strings_match(const struct access_rule_strings *strings,
			   const char *value)
{
	const char *glob;
	bool matched;

	if (value == NULL)
		return FALSE;
	matched = array_count(&strings->positive) == 0;
	array_foreach_elem(&strings->positive, glob) {
		if (wildcard_match_icase(value, glob)) {
			matched = TRUE;
			break;
		}
	}
	if (!matched)
		return FALSE;
	array_foreach_elem(&strings->negative, glob) {
		if (wildcard_match_icase(value, glob))
			return FALSE;
	}
	return TRUE;
}

/* A user is in a group condition when any of its groups matches a
   positive value and none of its groups matches a negated one. */
static bool
access_rules_groups_match(const struct access_rule_strings *strings,
			  const char *const *groups)
{
	const char *glob;
	unsigned int i;
	bool matched;

	matched = array_count(&strings->positive) == 0;
	for (i = 0; groups != NULL && groups[i] != NULL && !matched; i++) {
		array_foreach_elem(&strings->positive, glob) {
			if (wildcard_match_icase(groups[i], glob)) {
				matched = TRUE;
				break;
			}
		}
	}
	if (!matched)
		return FALSE;
	for (i = 0; groups != NULL && groups[i] != NULL; i++) {
		array_foreach_elem(&strings->negative, glob) {
			if (wildcard_match_icase(groups[i], glob))
				return FALSE;
		}
	}
	return TRUE;
}

static bool
access_rules_nets_match(const struct access_rule_nets *nets,
			const struct ip_addr *ip)
{
	const struct access_rule_net *net;
	bool matched;

	if (ip->family == 0)
		return FALSE;
	matched = array_count(&nets->positive) == 0;
	array_foreach(&nets->positive, net) {
		if (net_is_in_network(ip, &net->ip, net->bits)) {
			matched = TRUE;
			break;
		}
	}
	if (!matched)
		return FALSE;
	array_foreach(&nets->negative, net) {
		if (net_is_in_network(ip, &net->ip, net->bits))
			return FALSE;
	}
	return TRUE;
}

static bool
access_rules_ports_match(const struct access_rule_ports *ports, in_port_t port)
{
	const struct access_rule_port_range *range;
	bool matched;

	if (port == 0)
		return FALSE;
	matched = array_count(&ports->positive) == 0;
	array_foreach(&ports->positive, range) {
		if (port >= range->first && port <= range->last) {
			matched = TRUE;
			break;
		}
	}
	if (!matched)
		return FALSE;
	array_foreach(&ports->negative, range) {
		if (port >= range->first && port <= range->last)
			return FALSE;
	}
	return TRUE;
}

static const char *access_rules_user_domain(const char *username)
{
	const char *at = username == NULL ? NULL : strrchr(username, '@');

	return at == NULL ? NULL : at + 1;
}

static bool
access_rules_time_match(const struct access_rule *rule, time_t now)
{
	struct tm tm;
	unsigned int minute;

	if (localtime_r(&now, &tm) == NULL)
		return FALSE;
	if (rule->days != 0 && (rule->days & (1U << tm.tm_wday)) == 0)
		return FALSE;
	if (!rule->has_time)
		return TRUE;
	minute = tm.tm_hour * 60 + tm.tm_min;
	if (rule->time_start < rule->time_end)
		return minute >= rule->time_start && minute < rule->time_end;
	return minute >= rule->time_start || minute < rule->time_end;
}

bool access_rule_match(const struct access_rule *rule,
		       const struct access_rules_session *session)
{
	if ((rule->protocols & (1U << session->protocol)) == 0)
		return FALSE;
	if (rule->users != NULL &&
	    !access_rules_strings_match(rule->users, session->username))
		return FALSE;
	if (rule->domains != NULL &&
	    !access_rules_strings_match(rule->domains,
			access_rules_user_domain(session->username)))
		return FALSE;
	if (rule->groups != NULL &&
	    !access_rules_groups_match(rule->groups, session->groups))
		return FALSE;
	if (rule->nets != NULL &&
	    !access_rules_nets_match(rule->nets, &session->remote_ip))
		return FALSE;
	if (rule->ports != NULL &&
	    !access_rules_ports_match(rule->ports, session->local_port))
		return FALSE;
	if (rule->tls == ACCESS_RULE_TLS_YES && !session->tls)
		return FALSE;
	if (rule->tls == ACCESS_RULE_TLS_NO && session->tls)
		return FALSE;
	if (rule->client_names != NULL &&
	    !access_rules_strings_match(rule->client_names,
					session->client_name))
		return FALSE;
	if (rule->client_versions != NULL &&
	    !access_rules_strings_match(rule->client_versions,
					session->client_version))
		return FALSE;
	if ((rule->has_time || rule->days != 0) &&
	    !access_rules_time_match(rule, session->now))
		return FALSE;
	return TRUE;
}

static void
access_rules_cursor_add(ARRAY_TYPE(access_rules_cursor) *cursors,
			const ARRAY_TYPE(access_rule_const) *list)
{
	struct access_rules_cursor *cursor;

	if (list == NULL || !array_is_created(list) || array_count(list) == 0)
		return;
	cursor = array_append_space(cursors);
	cursor->rules = array_get(list, &cursor->count);
}

static void
access_rules_cursor_add_hash(ARRAY_TYPE(access_rules_cursor) *cursors,
	HASH_TABLE_TYPE(access_rules_key) hash,
	const char *key)
{
	if (key == NULL || hash_table_count(hash) == 0)
		return;
	/* no T_BEGIN here: cursors lives in the caller's data stack frame
	   and may grow */
	access_rules_cursor_add(cursors,
		hash_table_lookup(hash, t_str_lcase(key)));
}

static void
access_rules_cursor_add_trie(ARRAY_TYPE(access_rules_cursor) *cursors,
			     const struct access_rules_trie_node *node,
			     const struct ip_addr *ip)
{
	unsigned int bit, max_bits = IPADDR_IS_V4(ip) ? 32 : 128;

	for (bit = 0; node != NULL; bit++) {
		access_rules_cursor_add(cursors, &node->rules);
		if (bit == max_bits)
			break;
		node = node->child[access_rules_ip_bit(ip, bit) ? 1 : 0];
	}
}

const struct access_rule *
access_rules_index_lookup(const struct access_rules_index *index,
			  const struct access_rules_session *session)
{
	ARRAY_TYPE(access_rules_cursor) cursors;
	struct access_rules_cursor *cursor;
	const struct access_rule *next, *found = NULL;
	unsigned int i;

	t_array_init(&cursors, 8);
	access_rules_cursor_add_hash(&cursors, index->users, session->username);
	access_rules_cursor_add_hash(&cursors, index->domains,
			access_rules_user_domain(session->username));
	for (i = 0; session->groups != NULL && session->groups[i] != NULL; i++)
		access_rules_cursor_add_hash(&cursors, index->groups,
					     session->groups[i]);
	if (IPADDR_IS_V4(&session->remote_ip))
		access_rules_cursor_add_trie(&cursors, index->trie_ip4,
					     &session->remote_ip);
	else if (IPADDR_IS_V6(&session->remote_ip))
		access_rules_cursor_add_trie(&cursors, index->trie_ip6,
					     &session->remote_ip);
	access_rules_cursor_add(&cursors, &index->generic);

	/* merge the sorted lists, testing each rule once in file order */
	for (;;) {
		next = NULL;
		array_foreach_modifiable(&cursors, cursor) {
			if (cursor->pos < cursor->count &&
			    (next == NULL ||
			     cursor->rules[cursor->pos]->index < next->index))
				next = cursor->rules[cursor->pos];
		}
		if (next == NULL)
			break;
		if (access_rule_match(next, session)) {
			found = next;
			break;
		}
		array_foreach_modifiable(&cursors, cursor) {
			if (cursor->pos < cursor->count &&
			    cursor->rules[cursor->pos] == next)
				cursor->pos++;
		}
	}
	return found;
}

int access_rules_evaluate(const struct access_rules *rules,
			  const char *ruleset,
			  const struct access_rules_session *session,
			  struct access_rules_decision *decision_r)
{
	const struct access_rule_set *set;
	const struct access_rule *rule;

	set = access_rules_find_set(rules, ruleset);
	if (set == NULL)
		return -1;

	i_zero(decision_r);
	decision_r->ruleset = set->name;
	decision_r->depends_on_client_id = set->has_client_id_rules;
	T_BEGIN {
		rule = access_rules_index_lookup(set->index[session->protocol],
						 session);
	} T_END;
	if (rule == NULL) {
		decision_r->action = set->default_action;
		decision_r->reason = set->default_reason;
		decision_r->default_line = set->default_line;
		return 0;
	}
	decision_r->action = rule->action;
	decision_r->rule_line = rule->line;
	decision_r->reason = rule->reason;
	decision_r->mailboxes = rule->mailboxes;
	decision_r->hidden_mailboxes = rule->hidden_mailboxes;
	decision_r->max_sessions = rule->max_sessions;
	memcpy(decision_r->max_protocol_sessions, rule->max_protocol_sessions,
	       sizeof(decision_r->max_protocol_sessions));
	return 0;
}
